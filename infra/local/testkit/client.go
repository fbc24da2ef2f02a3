package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/frames"
)

// Client is one browser-like WebSocket client of a gateway (or of a workload's own
// address): it reads every frame into a queue. NextFrame takes frames in the order they
// arrived; the waits that match frames by content keep the ones that did not match for
// later waits (a status frame and a workload's reply may arrive in either order). A
// Client is used by one goroutine at a time; Write and Await report errors instead of
// failing the test, for use from other goroutines.
type Client struct {
	tb testing.TB
	// User is the user the client connected as (empty for a bare URL).
	User string
	Conn *websocket.Conn

	frames  chan string
	done    chan struct{}
	pending []string
}

// ErrClosed is returned by a wait when the connection ended first.
var ErrClosed = errors.New("connection closed")

// HandshakeError is a refused handshake, its HTTP status and the start of its body.
type HandshakeError struct {
	Status int
	Body   string
	Err    error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("handshake refused (%d): %v", e.Status, e.Err)
}
func (e *HandshakeError) Unwrap() error { return e.Err }

// DialURL connects to url (a signed stage URL, or a workload's own ws:// address) and
// returns once the handshake completed, within Wait. The connection is closed when the
// test ends. It never fails tb.
func DialURL(tb testing.TB, url string) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		if resp != nil {
			he := &HandshakeError{Status: resp.StatusCode, Err: err}
			if resp.Body != nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				he.Body = string(b)
			}
			return nil, he
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	conn.SetReadLimit(1 << 20)
	c := &Client{tb: tb, Conn: conn, frames: make(chan string, 4096), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			c.frames <- string(b)
		}
	}()
	tb.Cleanup(c.Close)
	return c, nil
}

// DialAs is DialURL for a URL signed for user.
func DialAs(tb testing.TB, url, user string) (*Client, error) {
	c, err := DialURL(tb, url)
	if err != nil {
		return nil, err
	}
	c.User = user
	return c, nil
}

// mustDial fails the test when the dial as user failed.
func mustDial(tb testing.TB, user string, c *Client, err error) *Client {
	tb.Helper()
	if err != nil {
		tb.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

// DialAll connects as each of users at once with dial (a Stack's or a Gateway's
// TryDial), failing the test if any handshake fails; clients come in users' order.
func DialAll(tb testing.TB, users []string, dial func(testing.TB, string) (*Client, error)) []*Client {
	tb.Helper()
	clients := make([]*Client, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() { clients[i], errs[i] = dial(tb, u) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return clients
}

// Write sends one text frame.
func (c *Client) Write(frame string) error {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := c.Conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		return fmt.Errorf("%s send: %w", c.User, err)
	}
	return nil
}

// Send sends one text frame, failing the test on error.
func (c *Client) Send(frame string) {
	c.tb.Helper()
	if err := c.Write(frame); err != nil {
		c.tb.Fatal(err)
	}
}

// Await returns the earliest frame that matches, waiting up to timeout; frames that
// do not match stay pending for later waits.
func (c *Client) Await(timeout time.Duration, match func(string) bool) (string, error) {
	for i, f := range c.pending {
		if match(f) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return f, nil
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				return f, nil
			}
			c.pending = append(c.pending, f)
		case <-c.done:
			// Frames read before the end still count.
			select {
			case f := <-c.frames:
				if match(f) {
					return f, nil
				}
				c.pending = append(c.pending, f)
				continue
			default:
			}
			return "", ErrClosed
		case <-timer.C:
			return "", fmt.Errorf("none within %s (unmatched: %q)", timeout, lastN(c.pending, 5))
		}
	}
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Next is Await, failing the test (with what was awaited) on error.
func (c *Client) Next(timeout time.Duration, what string, match func(string) bool) string {
	c.tb.Helper()
	f, err := c.Await(timeout, match)
	if err != nil {
		c.tb.Fatalf("%s: no %s: %v", c.User, what, err)
	}
	return f
}

// Until returns the frames in arrival order up to and including the first that
// matches, failing the test if none does within timeout.
func (c *Client) Until(timeout time.Duration, what string, match func(string) bool) []string {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	var seen []string
	for {
		f, err := c.Await(time.Until(deadline), Any)
		if err != nil {
			c.tb.Fatalf("%s: no %s: %v (saw %q)", c.User, what, err, lastN(seen, 5))
		}
		seen = append(seen, f)
		if match(f) {
			return seen
		}
	}
}

// Any matches every frame: Next(timeout, what, Any) is the next frame in arrival order.
func Any(string) bool { return true }

// NextFrame returns the next frame in arrival order decoded as a platform frame,
// failing the test if it is a workload's frame or none arrives within Wait. Receipts
// (status saved) are passed over and stay pending: a sandbox sends one whenever a sync
// stores something, so they fall between the frames of a sandbox's life at any point.
func (c *Client) NextFrame() frames.Frame {
	c.tb.Helper()
	f := c.Next(Wait, "frame", func(f string) bool { return !IsStatus(frames.Saved)(f) })
	fr, ok := Platform(f)
	if !ok {
		c.tb.Fatalf("message %q is not a platform frame", f)
	}
	return fr
}

// Pending returns the frames received and not yet taken, without waiting.
func (c *Client) Pending() []string {
	for {
		select {
		case f := <-c.frames:
			c.pending = append(c.pending, f)
		default:
			return append([]string(nil), c.pending...)
		}
	}
}

// Closed is closed once the connection has ended.
func (c *Client) Closed() <-chan struct{} { return c.done }

// Close closes the connection normally (the gateway runs $disconnect) and waits for
// the reader to end.
func (c *Client) Close() {
	_ = c.Conn.Close(websocket.StatusNormalClosure, "bye")
	c.Conn.CloseNow()
	<-c.done
}

// IsStatus matches a sandgate.status frame with state.
func IsStatus(state string) func(string) bool {
	return func(f string) bool {
		fr, ok := Platform(f)
		return ok && fr.Type == frames.TypeStatus && fr.State == state
	}
}

// IsError matches any sandgate.error frame.
func IsError(f string) bool {
	fr, ok := Platform(f)
	return ok && fr.Type == frames.TypeError
}

// IsErrorReason matches a sandgate.error frame with reason.
func IsErrorReason(reason string) func(string) bool {
	return func(f string) bool {
		fr, ok := Platform(f)
		return ok && fr.Type == frames.TypeError && fr.Reason == reason
	}
}

// Is matches a frame equal to want.
func Is(want string) func(string) bool { return func(f string) bool { return f == want } }

// IsJSON matches a workload frame of the demo with the given "type".
func IsJSON(typ string) func(string) bool {
	return func(f string) bool {
		var m map[string]any
		return !frames.IsPlatform([]byte(f)) && json.Unmarshal([]byte(f), &m) == nil && m["type"] == typ
	}
}

// Platform decodes a platform frame; ok is false for a workload's frame.
func Platform(f string) (frames.Frame, bool) {
	var fr frames.Frame
	if !frames.IsPlatform([]byte(f)) || json.Unmarshal([]byte(f), &fr) != nil {
		return frames.Frame{}, false
	}
	return fr, true
}

// Status waits for a sandgate.status frame with state.
func (c *Client) Status(state string, timeout time.Duration) {
	c.tb.Helper()
	c.Next(timeout, "status "+state, IsStatus(state))
}

// ErrorFrame waits for a sandgate.error frame and returns its reason.
func (c *Client) ErrorFrame(timeout time.Duration) string {
	c.tb.Helper()
	fr, _ := Platform(c.Next(timeout, "error frame", IsError))
	return fr.Reason
}

// JSONFrame waits for a workload frame of the demo with the given type.
func (c *Client) JSONFrame(typ string, timeout time.Duration) map[string]any {
	c.tb.Helper()
	f := c.Next(timeout, typ+" frame", IsJSON(typ))
	var m map[string]any
	_ = json.Unmarshal([]byte(f), &m)
	return m
}

// Note saves a note in the demo workload and waits for its acknowledgement.
func (c *Client) Note(text string, timeout time.Duration) {
	c.tb.Helper()
	c.Send(NoteFrame(text))
	c.JSONFrame("note.saved", timeout)
}

// NoteFrame is the demo workload's frame that saves text as a note.
func NoteFrame(text string) string {
	b, _ := json.Marshal(map[string]string{"type": "note", "text": text})
	return string(b)
}

// Notes asks the demo workload for the user's notes.
func (c *Client) Notes(timeout time.Duration) []string {
	c.tb.Helper()
	c.Send(`{"type":"notes"}`)
	return NotesOf(c.JSONFrame("notes", timeout))
}

// NotesOf returns the notes a demo "notes" frame lists.
func NotesOf(m map[string]any) []string {
	var out []string
	list, _ := m["notes"].([]any)
	for _, n := range list {
		s, _ := n.(string)
		out = append(out, s)
	}
	return out
}
