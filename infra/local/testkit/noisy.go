package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/internal/frames"
)

// The noisy neighbour: one user replaying one signed URL as fast as it can, and users
// who behave, side by side on one stack (issue 19's test and benchmark).

// Abuser replays one signed URL of one user: handshakes at ConnectRate a second, half
// of them dropped at once (one in four before the handshake's answer, one in four as
// soon as it opens), and frames at FrameRate a second over the connections it keeps
// open (Keep of them, replaced as they are closed). Its counters are safe to read
// while it runs.
type Abuser struct {
	URL         string
	ConnectRate float64
	FrameRate   float64
	// Keep is how many connections it keeps open to send frames (4 when zero).
	Keep int
	// Behind, when set, reports that the stack has not yet run the frames already
	// sent; the abuser skips a frame then (FramesSkipped), as it skips a handshake
	// while maxInFlight are pending. Locally every frame is an invocation of one of ten
	// processes on a shared machine: offered faster than the machine runs them, they
	// queue without end and the queue, not the product, exhausts the concurrency that
	// Lambda, scaling out, would not.
	Behind func() bool

	// Attempts counts handshakes tried; Opened those that opened; Limited those
	// refused with 429 (the user's connect rate, or API Gateway's quota); Refused the
	// others refused; Dropped those abandoned on purpose.
	Attempts, Opened, Limited, Refused, Dropped atomic.Int64
	// FramesSent counts frames written; Echoes the workload's answers read; ErrorFrames
	// the sandgate.error frames read; ClosedByServer the kept connections the server
	// closed.
	FramesSent, FramesSkipped, Echoes, ErrorFrames, ClosedByServer atomic.Int64

	mu   sync.Mutex
	kept []*websocket.Conn
}

// maxInFlight bounds the abuser's handshakes in flight, so a stalled gateway does not
// make it start goroutines without end.
const maxInFlight = 256

// Run runs the abuser until ctx ends, then closes what it holds.
func (a *Abuser) Run(ctx context.Context) {
	keep := a.Keep
	if keep <= 0 {
		keep = 4
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	wg.Go(func() {
		pace(ctx, a.ConnectRate, func(i int64) {
			select {
			case sem <- struct{}{}:
			default:
				return // the gateway is behind: skip this one
			}
			wg.Go(func() {
				defer func() { <-sem }()
				a.connect(ctx, i, keep)
			})
		})
	})
	wg.Go(func() {
		var next int
		pace(ctx, a.FrameRate, func(i int64) {
			if a.Behind != nil && a.Behind() {
				a.FramesSkipped.Add(1)
				return
			}
			a.mu.Lock()
			if len(a.kept) == 0 {
				a.mu.Unlock()
				return
			}
			next = (next + 1) % len(a.kept)
			c := a.kept[next]
			a.mu.Unlock()
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := c.Write(wctx, websocket.MessageText, fmt.Appendf(nil, "abuse-%d", i)); err == nil {
				a.FramesSent.Add(1)
			}
		})
	})
	wg.Wait()
	a.mu.Lock()
	for _, c := range a.kept {
		c.CloseNow()
	}
	a.kept = nil
	a.mu.Unlock()
}

func (a *Abuser) connect(ctx context.Context, i int64, keep int) {
	a.Attempts.Add(1)
	if i%4 == 0 {
		// Dropped before the handshake's answer: the request is sent, the socket closed.
		a.Dropped.Add(1)
		abortHandshake(ctx, a.URL)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, a.URL, nil)
	switch {
	case err != nil && resp != nil && resp.StatusCode == 429:
		a.Limited.Add(1)
		return
	case err != nil:
		if ctx.Err() == nil {
			a.Refused.Add(1)
		}
		return
	}
	a.Opened.Add(1)
	a.mu.Lock()
	if i%4 == 1 || len(a.kept) >= keep {
		a.mu.Unlock()
		a.Dropped.Add(1)
		c.CloseNow()
		return
	}
	a.kept = append(a.kept, c)
	a.mu.Unlock()
	a.read(ctx, c)
}

// read reads a kept connection until it ends, counting what arrives.
func (a *Abuser) read(ctx context.Context, c *websocket.Conn) {
	defer func() {
		a.mu.Lock()
		for i, k := range a.kept {
			if k == c {
				a.kept = append(a.kept[:i], a.kept[i+1:]...)
				break
			}
		}
		a.mu.Unlock()
		c.CloseNow()
	}()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.ClosedByServer.Add(1)
			}
			return
		}
		var f frames.Frame
		switch {
		case json.Unmarshal(data, &f) == nil && f.Type == frames.TypeError:
			a.ErrorFrames.Add(1)
		case json.Unmarshal(data, &f) == nil && f.Type == frames.TypeStatus:
		default:
			a.Echoes.Add(1)
		}
	}
}

// abortHandshake sends a WebSocket upgrade request for rawURL and closes the socket
// without reading the answer.
func abortHandshake(ctx context.Context, rawURL string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host)
}

// pace calls fn at rate a second (numbering the calls) until ctx ends, catching up in
// batches when the ticker falls behind.
func pace(ctx context.Context, rate float64, fn func(i int64)) {
	if rate <= 0 {
		<-ctx.Done()
		return
	}
	start := time.Now()
	tick := time.NewTicker(max(time.Millisecond, time.Duration(float64(time.Second)/rate)))
	defer tick.Stop()
	var done int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * rate)
		for ; done < due && ctx.Err() == nil; done++ {
			fn(done)
		}
	}
}

// Neighbours are users who behave: each connects with a fresh signed URL, waits until
// told its sandbox is ready, makes RoundTrips echo round trips one after another,
// closes and does it again after Pause (at least a second between connects, well within
// the default per-user limits), until the context ends.
type Neighbours struct {
	// Sign returns a fresh signed URL for a user.
	Sign func(user string) (string, error)
	// Users are the users, one goroutine each.
	Users      []string
	RoundTrips int
	Pause      time.Duration

	mu sync.Mutex
	// Ready are the connect → ready times, Trips the round trips, of every cycle.
	ready, trips []time.Duration
	errs         []error
	cycles       int
}

// NeighbourResults is what the users saw.
type NeighbourResults struct {
	Cycles       int
	Errors       []error
	Ready, Trips []time.Duration
}

// Run has every user start cycles until ctx ends and returns what they saw. A cycle
// started before the end runs to its own end (within Wait) and counts, error and all:
// on a loaded machine a cycle may outlast the phase, and cutting it short would hide
// what the user saw.
func (n *Neighbours) Run(ctx context.Context) NeighbourResults {
	var wg sync.WaitGroup
	for _, u := range n.Users {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Wait)
				ready, trips, err := n.cycle(cctx, u)
				cancel()
				n.mu.Lock()
				n.cycles++
				if err != nil {
					n.errs = append(n.errs, fmt.Errorf("%s: %w", u, err))
				} else {
					n.ready = append(n.ready, ready)
					n.trips = append(n.trips, trips...)
				}
				n.mu.Unlock()
				wait := max(n.Pause, time.Second-time.Since(t0))
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		})
	}
	wg.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	return NeighbourResults{Cycles: n.cycles, Errors: n.errs, Ready: n.ready, Trips: n.trips}
}

// errFrame is a sandgate.error, or API Gateway's own error frame, that a user got.
var errFrame = errors.New("error frame")

func (n *Neighbours) cycle(ctx context.Context, user string) (time.Duration, []time.Duration, error) {
	u, err := n.Sign(user)
	if err != nil {
		return 0, nil, err
	}
	t0 := time.Now()
	dctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u, nil)
	if err != nil {
		if resp != nil {
			return 0, nil, fmt.Errorf("handshake refused (%d): %w", resp.StatusCode, err)
		}
		return 0, nil, fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	if err := awaitFrame(dctx, c, func(f frames.Frame, _ []byte) bool { return f.Type == frames.TypeStatus && f.State == frames.Ready }); err != nil {
		return 0, nil, fmt.Errorf("never ready: %w", err)
	}
	ready := time.Since(t0)
	var trips []time.Duration
	for i := range n.RoundTrips {
		msg := fmt.Sprintf("wb-%s-%d-%d", user, t0.UnixNano(), i)
		t1 := time.Now()
		if err := c.Write(dctx, websocket.MessageText, []byte(msg)); err != nil {
			return 0, nil, fmt.Errorf("write: %w", err)
		}
		if err := awaitFrame(dctx, c, func(_ frames.Frame, b []byte) bool { return string(b) == msg }); err != nil {
			return 0, nil, fmt.Errorf("round trip %d: %w", i, err)
		}
		trips = append(trips, time.Since(t1))
	}
	c.Close(websocket.StatusNormalClosure, "")
	return ready, trips, nil
}

// awaitFrame reads until match accepts a frame; an error frame (sandgate's or API
// Gateway's own) first is an error.
func awaitFrame(ctx context.Context, c *websocket.Conn, match func(frames.Frame, []byte) bool) error {
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return err
		}
		var f frames.Frame
		_ = json.Unmarshal(b, &f)
		if match(f, b) {
			return nil
		}
		if f.Type == frames.TypeError {
			return fmt.Errorf("%w: %s", errFrame, b)
		}
		var gw struct {
			Message      string `json:"message"`
			ConnectionID string `json:"connectionId"`
		}
		if json.Unmarshal(b, &gw) == nil && gw.Message != "" && gw.ConnectionID != "" {
			return fmt.Errorf("%w: API Gateway: %s", errFrame, b)
		}
	}
}

// AgentCalls counts the frames of user that the Message function handed an agent
// since since, delivered or refused (its DEBUG lines: run the stack at LOG_LEVEL=DEBUG).
func (s *Stack) AgentCalls(user string, since time.Time) int {
	return len(s.Output.Lines(func(l Line) bool {
		return !l.At.Before(since) && l.Source == s.Name("MessageFunction") && l.Str("userId") == user &&
			(l.Msg == "frame delivered" || l.Msg == "frame refused by the agent")
	}))
}

// Connected counts the connections of user the Connect function accepted since since.
func (s *Stack) Connected(user string, since time.Time) int {
	return len(s.Output.Lines(func(l Line) bool {
		return !l.At.Before(since) && l.Source == s.Name("ConnectFunction") && l.Str("userId") == user && l.Msg == "connected"
	}))
}

// LambdaStats returns every function's concurrency statistics, by logical id.
func (s *Stack) LambdaStats() map[string]lambdart.Stats {
	out := map[string]lambdart.Stats{}
	for id := range s.Template.Functions {
		if st, err := s.Runtime.Stats(s.Name(id)); err == nil {
			out[id] = st
		}
	}
	return out
}
