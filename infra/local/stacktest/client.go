package stacktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/frames"
)

// DefaultDialTimeout bounds one handshake.
const DefaultDialTimeout = 30 * time.Second

// Client is one browser-like WebSocket client: it reads every frame into a queue, and
// its waits match frames by content, keeping the ones that did not match for later
// waits (a status frame and a workload's reply may arrive in either order). A Client
// is used by one goroutine at a time; the methods without tb report errors instead of
// failing the test, for use from other goroutines.
type Client struct {
	tb   testing.TB
	User string
	Conn *websocket.Conn

	frames  chan string
	done    chan struct{}
	pending []string
}

// ErrClosed is returned by a wait when the connection ended first.
var ErrClosed = errors.New("connection closed")

// HandshakeError is a refused handshake and its HTTP status.
type HandshakeError struct {
	Status int
	Err    error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("handshake refused (%d): %v", e.Status, e.Err)
}
func (e *HandshakeError) Unwrap() error { return e.Err }

// DialURL connects to url (a signed stage URL, or a workload's own ws:// address)
// within timeout. The connection is closed when the test ends. It never fails tb.
func DialURL(tb testing.TB, url string, timeout time.Duration) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, &HandshakeError{Status: resp.StatusCode, Err: err}
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(1 << 20)
	cl := &Client{tb: tb, Conn: c, frames: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			cl.frames <- string(b)
		}
	}()
	tb.Cleanup(func() { c.CloseNow(); <-cl.done })
	return cl, nil
}

// Write sends one text frame.
func (c *Client) Write(frame string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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

// Pending returns the frames received and not yet matched, without waiting.
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

// Close closes the connection normally (the gateway runs $disconnect).
func (c *Client) Close() { c.Conn.Close(websocket.StatusNormalClosure, "bye") }

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
	f := c.Next(timeout, typ+" frame", func(f string) bool {
		var m map[string]any
		return json.Unmarshal([]byte(f), &m) == nil && m["type"] == typ
	})
	var m map[string]any
	_ = json.Unmarshal([]byte(f), &m)
	return m
}

// Note saves a note in the demo workload and waits for its acknowledgement.
func (c *Client) Note(text string, timeout time.Duration) {
	c.tb.Helper()
	b, _ := json.Marshal(map[string]string{"type": "note", "text": text})
	c.Send(string(b))
	c.JSONFrame("note.saved", timeout)
}

// Notes asks the demo workload for the user's notes.
func (c *Client) Notes(timeout time.Duration) []string {
	c.tb.Helper()
	c.Send(`{"type":"notes"}`)
	m := c.JSONFrame("notes", timeout)
	var out []string
	list, _ := m["notes"].([]any)
	for _, n := range list {
		s, _ := n.(string)
		out = append(out, s)
	}
	return out
}
