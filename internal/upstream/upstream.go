package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/logging"
)

// Defaults for Config's tunables.
const (
	// DefaultMaxQueueFrames and DefaultMaxQueueBytes bound what waits for one
	// connection's upstream: a workload that stops reading makes Send refuse rather
	// than the agent's memory grow.
	DefaultMaxQueueFrames = 1024
	DefaultMaxQueueBytes  = 8 << 20
	// DefaultWriteTimeout bounds one write to the workload.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultRedialFor is how long a broken upstream is redialled before the connection
	// gives up: long enough for the agent to restart a crashed workload.
	DefaultRedialFor = 30 * time.Second
	// DefaultReadLimit bounds one frame read from the workload. Frames above
	// MaxPostBytes but under this are dropped with a warning; larger ones break the
	// upstream, which is then redialled.
	DefaultReadLimit = 1 << 20
	// DefaultMaxPostBytes is what API Gateway's management API accepts in one post.
	DefaultMaxPostBytes = 128 << 10
	// DefaultWriteAttempts is how often one frame is tried on fresh upstreams before
	// it is given up.
	DefaultWriteAttempts = 3
)

// Header names the workload receives on every upstream handshake.
const (
	HeaderConnection = "X-Sandgate-Connection"
	HeaderUser       = "X-Sandgate-User"
)

var (
	// ErrQueueFull: the connection has DefaultMaxQueueFrames or DefaultMaxQueueBytes
	// waiting; the frame was not queued.
	ErrQueueFull = errors.New("upstream queue full")
	// ErrClosed: the connection was closed or aborted; the frame was not queued.
	ErrClosed = errors.New("upstream closed")
	// ErrUnavailable: the workload could not be reached for RedialFor.
	ErrUnavailable = errors.New("workload unreachable")
	// ErrWorkloadClosed: the workload closed the WebSocket itself (a close frame other
	// than 1001 Going Away), which ends the client's connection too.
	ErrWorkloadClosed = errors.New("workload closed the connection")
	// ErrGone is what a Poster returns when the client connection no longer exists:
	// the frames already queued are still written, further workload frames dropped,
	// and the upstream closed.
	ErrGone = errors.New("client connection gone")
)

// Poster sends one frame from the workload to the client connection.
type Poster func(ctx context.Context, data []byte) error

// Config describes one connection's upstream.
type Config struct {
	// URL is the workload's WebSocket address, ws://127.0.0.1:<port>/.
	URL string
	// Header is sent on every handshake (HeaderConnection, HeaderUser).
	Header http.Header
	// Post receives every frame the workload sends, one at a time, in order.
	Post Poster
	// Log gets one line per broken upstream, dropped frame or end; scope it with the
	// user and connection ids.
	Log *slog.Logger

	MaxQueueFrames, MaxQueueBytes int
	WriteTimeout, RedialFor       time.Duration
	ReadLimit, MaxPostBytes       int64
	WriteAttempts                 int
}

func (c *Config) defaults() {
	if c.MaxQueueFrames <= 0 {
		c.MaxQueueFrames = DefaultMaxQueueFrames
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.RedialFor <= 0 {
		c.RedialFor = DefaultRedialFor
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.MaxPostBytes <= 0 {
		c.MaxPostBytes = DefaultMaxPostBytes
	}
	if c.WriteAttempts <= 0 {
		c.WriteAttempts = DefaultWriteAttempts
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// item is one queued frame; data nil marks a Flush.
type item struct {
	data    []byte
	written func(error)
}

// Conn is one client connection's upstream. Its methods are safe for concurrent use.
type Conn struct {
	cfg    Config
	ctx    context.Context // cancelled by Abort
	cancel context.CancelFunc

	mu      sync.Mutex
	queue   []item
	bytes   int
	closing bool // Close called: write what is queued, then close
	ended   bool
	wake    chan struct{}

	gone atomic.Bool // the client is gone: discard workload frames
	wg   sync.WaitGroup
	done chan struct{}
	err  error // why the connection ended; set before done closes
}

// Open starts the upstream: it dials the workload at once (so the workload can greet
// the client before its first frame) and keeps one WebSocket open until Close, Abort,
// the client's departure (ErrGone from Post) or the workload's own close.
func Open(cfg Config) *Conn {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{cfg: cfg, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

// Send queues data for the workload; written, when not nil, is called once the frame
// has been written to the upstream (nil) or given up (an error), in queue order.
func (c *Conn) Send(data []byte, written func(error)) error {
	if data == nil {
		data = []byte{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.ended {
		return ErrClosed
	}
	if len(c.queue) >= c.cfg.MaxQueueFrames || c.bytes+len(data) > c.cfg.MaxQueueBytes {
		return fmt.Errorf("%w: %d frames, %d bytes waiting", ErrQueueFull, len(c.queue), c.bytes)
	}
	c.queue = append(c.queue, item{data: data, written: written})
	c.bytes += len(data)
	c.signal()
	return nil
}

// Flush waits until every frame queued before the call has been written or given up.
func (c *Conn) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return c.err
	}
	// The head of the queue is the frame being written, so an empty queue means there
	// is nothing to wait for (not even on an upstream being redialled).
	if !slices.ContainsFunc(c.queue, func(it item) bool { return it.data != nil }) {
		c.mu.Unlock()
		return nil
	}
	c.queue = append(c.queue, item{written: func(err error) { ch <- err }})
	c.signal()
	c.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued, then closes the upstream normally. Send refuses from
// now on.
func (c *Conn) Close() {
	c.mu.Lock()
	c.closing = true
	c.signal()
	c.mu.Unlock()
}

// Abort closes the upstream at once: queued frames are given up and nothing more is
// posted once Done is closed.
func (c *Conn) Abort() { c.cancel() }

// Done is closed once the connection has ended and its goroutines have returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended: nil after Close, ErrClosed after Abort,
// ErrGone, ErrWorkloadClosed or ErrUnavailable otherwise. Valid after Done.
func (c *Conn) Err() error { <-c.done; return c.err }

// Pending returns how many frames wait to be written.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, it := range c.queue {
		if it.data != nil {
			n++
		}
	}
	return n
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// upstream is one dialled WebSocket and what its reader learned when it ended.
type upstream struct {
	ws     *websocket.Conn
	broken chan struct{} // closed when the reader returns
	closed atomic.Bool   // the workload sent a close frame other than Going Away
}

// run owns the upstream: it dials, writes the queue in order and redials a broken
// upstream until RedialFor passes without success.
func (c *Conn) run() {
	var up *upstream
	defer func() {
		if up != nil {
			up.ws.CloseNow()
		}
		c.cancel()
		c.wg.Wait() // no Post after Done
		c.finish()
	}()
	attempts := 0
	for {
		if up == nil {
			if c.idleClosing() {
				c.end(nil)
				return
			}
			var err error
			if up, err = c.dial(); err != nil {
				c.end(err)
				return
			}
		}
		it, ok, err := c.next(up)
		if err != nil {
			if errors.Is(err, errBroken) {
				if up.closed.Load() {
					c.end(ErrWorkloadClosed)
					return
				}
				up.ws.CloseNow()
				up = nil
				continue
			}
			c.end(err)
			return
		}
		if !ok { // closing and nothing left
			c.closeNormally(up)
			up = nil
			c.end(nil)
			return
		}
		if it.data == nil {
			c.pop(it, nil)
			continue
		}
		typ := websocket.MessageText
		if !utf8.Valid(it.data) {
			typ = websocket.MessageBinary
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
		err = up.ws.Write(ctx, typ, it.data)
		cancel()
		if err == nil {
			attempts = 0
			c.pop(it, nil)
			continue
		}
		if c.ctx.Err() != nil {
			c.end(ErrClosed)
			return
		}
		attempts++
		c.cfg.Log.Warn("upstream write failed", logging.Error, err.Error(), logAttempt, attempts)
		up.ws.CloseNow()
		up = nil
		if attempts >= c.cfg.WriteAttempts {
			attempts = 0
			c.pop(it, fmt.Errorf("write to workload: %w", err))
		}
	}
}

var errBroken = errors.New("upstream broken")

// next waits for the next queued item. ok is false when Close was called and the
// queue is empty; errBroken means the upstream's reader ended.
func (c *Conn) next(up *upstream) (it item, ok bool, err error) {
	for {
		// A frame written to an upstream already known broken would be lost.
		select {
		case <-up.broken:
			return item{}, false, errBroken
		default:
		}
		c.mu.Lock()
		if len(c.queue) > 0 {
			it = c.queue[0]
			c.mu.Unlock()
			return it, true, nil
		}
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return item{}, false, nil
		}
		select {
		case <-c.wake:
		case <-up.broken:
			return item{}, false, errBroken
		case <-c.ctx.Done():
			return item{}, false, ErrClosed
		}
	}
}

// pop removes the head item (it) and reports its outcome.
func (c *Conn) pop(it item, err error) {
	c.mu.Lock()
	c.queue = c.queue[1:]
	c.bytes -= len(it.data)
	c.mu.Unlock()
	if it.written != nil {
		it.written(err)
	}
}

// dial connects to the workload, retrying with backoff for RedialFor.
func (c *Conn) dial() (*upstream, error) {
	start := time.Now()
	delay := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		ws, _, err := websocket.Dial(ctx, c.cfg.URL, &websocket.DialOptions{HTTPHeader: c.cfg.Header})
		cancel()
		if err == nil {
			ws.SetReadLimit(c.cfg.ReadLimit)
			up := &upstream{ws: ws, broken: make(chan struct{})}
			c.wg.Add(1)
			go c.read(up)
			return up, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if time.Since(start) >= c.cfg.RedialFor {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil, ErrClosed
		}
		delay = min(delay*2, time.Second)
	}
}

// read hands the workload's frames to Post, in order, until the upstream ends.
func (c *Conn) read(up *upstream) {
	defer c.wg.Done()
	defer close(up.broken)
	for {
		_, data, err := up.ws.Read(c.ctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != -1 && st != websocket.StatusGoingAway {
				up.closed.Store(true)
			}
			if c.ctx.Err() == nil && !c.isClosing() {
				c.cfg.Log.Info("upstream ended", logging.Error, err.Error())
			}
			return
		}
		if c.gone.Load() {
			continue
		}
		if int64(len(data)) > c.cfg.MaxPostBytes {
			c.cfg.Log.Warn("workload frame too large for the client; dropped", logBytes, len(data), logLimit, c.cfg.MaxPostBytes)
			continue
		}
		err = c.cfg.Post(c.ctx, data)
		switch {
		case err == nil:
		case errors.Is(err, ErrGone):
			c.gone.Store(true)
			c.Close()
		case c.ctx.Err() != nil:
			return
		default:
			c.cfg.Log.Warn("post to client failed; frame dropped", logging.Error, err.Error())
		}
	}
}

// idleClosing reports whether Close was called with nothing left to write, so a
// broken upstream need not be redialled.
func (c *Conn) idleClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing && len(c.queue) == 0
}

func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// closeNormally closes the upstream with a close handshake, bounded by WriteTimeout.
func (c *Conn) closeNormally(up *upstream) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		up.ws.Close(websocket.StatusNormalClosure, "")
	}()
	t := time.NewTimer(c.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		up.ws.CloseNow()
		<-done
	}
}

// end records why the connection ended and refuses further frames.
func (c *Conn) end(err error) {
	if err == nil && c.gone.Load() {
		err = ErrGone
	}
	c.mu.Lock()
	c.ended = true
	c.err = err
	c.mu.Unlock()
}

// finish gives up what is still queued and closes Done.
func (c *Conn) finish() {
	c.mu.Lock()
	c.ended = true
	queue := c.queue
	c.queue, c.bytes = nil, 0
	err := c.err
	c.mu.Unlock()
	for _, it := range queue {
		if it.written != nil {
			if err == nil {
				it.written(ErrClosed)
			} else {
				it.written(err)
			}
		}
	}
	close(c.done)
}

// Log keys of this package; the shared ones come from internal/logging.
const (
	logAttempt = "attempt"
	logBytes   = "bytes"
	logLimit   = "limit"
)
