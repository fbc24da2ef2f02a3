package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/upstream"
)

// workload is a WebSocket server standing in for the workload: it greets each
// connection, records what it reads, echoes it (unless quiet), and can be stopped and
// started again on the same port, as a crashed and restarted workload is.
type workload struct {
	t    *testing.T
	addr string

	mu      sync.Mutex
	ln      net.Listener
	srv     *http.Server
	conns   []*websocket.Conn
	got     []string
	types   []websocket.MessageType
	headers []http.Header
	quiet   bool
	onFrame func(c *websocket.Conn, data []byte)
}

func newWorkload(t *testing.T) *workload {
	w := &workload{t: t}
	w.start("127.0.0.1:0")
	t.Cleanup(w.stop)
	return w
}

func (w *workload) start(addr string) {
	w.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		w.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(w.serve)}
	w.mu.Lock()
	w.ln, w.srv, w.addr = ln, srv, ln.Addr().String()
	w.mu.Unlock()
	go srv.Serve(ln)
}

// stop closes the listener and every connection without a close frame, as a crash does.
func (w *workload) stop() {
	w.mu.Lock()
	srv, conns := w.srv, w.conns
	w.srv, w.conns = nil, nil
	w.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	for _, c := range conns {
		c.CloseNow()
	}
}

func (w *workload) url() string { return "ws://" + w.addr + "/" }

func (w *workload) serve(rw http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(rw, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(1 << 22)
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.headers = append(w.headers, r.Header.Clone())
	w.mu.Unlock()
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		return
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.got = append(w.got, string(data))
		w.types = append(w.types, typ)
		quiet, on := w.quiet, w.onFrame
		w.mu.Unlock()
		if on != nil {
			on(c, data)
		}
		if !quiet {
			c.Write(ctx, typ, data)
		}
	}
}

// waitReceived waits until the workload has read n frames and returns them: a write
// is done when it is on the socket, not when the other side has read it.
func (w *workload) waitReceived(n int) []string {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := w.received()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *workload) received() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// poster records what the connection posts to the client.
type poster struct {
	mu    sync.Mutex
	posts []string
	err   func(data string) error
	seen  chan string
}

func newPoster() *poster { return &poster{seen: make(chan string, 1024)} }

func (p *poster) post(ctx context.Context, data []byte) error {
	p.mu.Lock()
	p.posts = append(p.posts, string(data))
	fail := p.err
	p.mu.Unlock()
	// A post nobody reads waits only as long as the connection lives, as a real
	// poster's request does: a workload that floods faster than the test reads would
	// otherwise hold the connection's Done forever.
	select {
	case p.seen <- string(data):
	case <-ctx.Done():
	}
	if fail != nil {
		return fail(string(data))
	}
	return nil
}

func (p *poster) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.posts)
}

// wait returns the next posted frame.
func (p *poster) wait(t *testing.T) string {
	t.Helper()
	select {
	case s := <-p.seen:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("nothing posted")
		return ""
	}
}

func open(t *testing.T, cfg upstream.Config) *upstream.Conn {
	c := upstream.Open(cfg)
	t.Cleanup(func() { c.Abort(); <-c.Done() })
	return c
}

func TestConn_Send_InOrderWithCallbacks(t *testing.T) {
	w := newWorkload(t)
	p := newPoster()
	c := open(t, upstream.Config{URL: w.url(), Post: p.post,
		Header: http.Header{upstream.HeaderConnection: {"conn-1"}, upstream.HeaderUser: {"user_a"}}})
	var mu sync.Mutex
	var written []string
	var want []string
	for i := range 200 {
		f := fmt.Sprintf("f%03d", i)
		want = append(want, f)
		if err := c.Send([]byte(f), func(err error) {
			if err != nil {
				t.Errorf("%s: %v", f, err)
			}
			mu.Lock()
			written = append(written, f)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !slices.Equal(written, want) {
		t.Fatalf("written callbacks out of order: %q", written)
	}
	mu.Unlock()
	if got := w.waitReceived(len(want)); !slices.Equal(got, want) {
		t.Fatalf("workload read %q", got)
	}
	// The greeting comes first, then every echo, in order.
	if got := p.wait(t); got != "hello" {
		t.Fatalf("first post %q", got)
	}
	for _, f := range want {
		if got := p.wait(t); got != f {
			t.Fatalf("post %q, want %q", got, f)
		}
	}
	w.mu.Lock()
	h := w.headers[0]
	w.mu.Unlock()
	if h.Get(upstream.HeaderConnection) != "conn-1" || h.Get(upstream.HeaderUser) != "user_a" {
		t.Fatalf("handshake headers %v", h)
	}
}

func TestConn_Send_BinaryStaysBinary(t *testing.T) {
	w := newWorkload(t)
	p := newPoster()
	c := open(t, upstream.Config{URL: w.url(), Post: p.post})
	bin := []byte{0xff, 0xfe, 0x00, 0x80}
	if err := c.Send(bin, nil); err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("text"), nil)
	w.waitReceived(2)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.types) != 2 || w.types[0] != websocket.MessageBinary || w.types[1] != websocket.MessageText {
		t.Fatalf("message types %v", w.types)
	}
}

// Frames sent while the workload is not up yet wait and arrive in order once it
// listens.
func TestConn_Send_BeforeTheWorkloadListens(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := newPoster()
	c := open(t, upstream.Config{URL: "ws://" + addr + "/", Post: p.post, RedialFor: 10 * time.Second})
	var want []string
	for i := range 5 {
		f := fmt.Sprintf("early-%d", i)
		want = append(want, f)
		if err := c.Send([]byte(f), nil); err != nil {
			t.Fatal(err)
		}
	}
	w := &workload{t: t}
	w.start(addr)
	t.Cleanup(w.stop)
	if got := w.waitReceived(len(want)); !slices.Equal(got, want) {
		t.Fatalf("workload read %q, want %q", got, want)
	}
}

// A workload that crashes and comes back on its port is redialled: it greets the
// client again and serves the next frames.
func TestConn_Redial_AfterWorkloadRestart(t *testing.T) {
	w := newWorkload(t)
	p := newPoster()
	c := open(t, upstream.Config{URL: w.url(), Post: p.post, RedialFor: 10 * time.Second})
	if got := p.wait(t); got != "hello" {
		t.Fatal(got)
	}
	w.stop()
	w.start(w.addr)
	if got := p.wait(t); got != "hello" {
		t.Fatalf("after the restart, posted %q, want a second greeting", got)
	}
	c.Send([]byte("after"), nil)
	if got := p.wait(t); got != "after" {
		t.Fatalf("posted %q", got)
	}
	if got := w.waitReceived(1); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("workload read %q", got)
	}
}

// A workload that stays away for RedialFor ends the connection: queued frames are
// reported as given up, and Send refuses.
func TestConn_Dial_GivesUpAfterRedialFor(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nobody listens here
	c := open(t, upstream.Config{URL: "ws://" + addr + "/", Post: newPoster().post, RedialFor: 300 * time.Millisecond})
	errs := make(chan error, 1)
	c.Send([]byte("lost"), func(err error) { errs <- err })
	<-c.Done()
	if err := c.Err(); !errors.Is(err, upstream.ErrUnavailable) {
		t.Fatalf("Err = %v, want ErrUnavailable", err)
	}
	if err := <-errs; err == nil {
		t.Fatal("a frame never written was reported written")
	}
	if err := c.Send([]byte("late"), nil); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after the end = %v", err)
	}
}

func TestConn_Send_QueueFull(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := open(t, upstream.Config{URL: "ws://" + addr + "/", Post: newPoster().post, MaxQueueFrames: 2, MaxQueueBytes: 1 << 20})
	for i := range 2 {
		if err := c.Send(fmt.Appendf(nil, "%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send([]byte("third"), nil); !errors.Is(err, upstream.ErrQueueFull) {
		t.Fatalf("third Send = %v, want ErrQueueFull", err)
	}
	if c.Pending() != 2 {
		t.Fatalf("Pending = %d", c.Pending())
	}
	c2 := open(t, upstream.Config{URL: "ws://" + addr + "/", Post: newPoster().post, MaxQueueBytes: 10})
	if err := c2.Send(make([]byte, 11), nil); !errors.Is(err, upstream.ErrQueueFull) {
		t.Fatalf("oversized Send = %v, want ErrQueueFull", err)
	}
}

// The workload closing the WebSocket itself ends the connection with ErrWorkloadClosed.
func TestConn_WorkloadCloses_Ends(t *testing.T) {
	w := newWorkload(t)
	w.onFrame = func(c *websocket.Conn, data []byte) {
		if string(data) == "bye" {
			c.Close(websocket.StatusNormalClosure, "done")
		}
	}
	c := open(t, upstream.Config{URL: w.url(), Post: newPoster().post})
	c.Send([]byte("bye"), nil)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end")
	}
	if err := c.Err(); !errors.Is(err, upstream.ErrWorkloadClosed) {
		t.Fatalf("Err = %v, want ErrWorkloadClosed", err)
	}
}

// When the client is gone (Post returns ErrGone), the frames already queued still reach
// the workload, further workload frames are not posted, and the upstream closes.
func TestConn_ClientGone_QueueDeliveredThenClosed(t *testing.T) {
	w := newWorkload(t)
	release := make(chan struct{})
	p := newPoster()
	p.err = func(string) error { <-release; return upstream.ErrGone }
	c := open(t, upstream.Config{URL: w.url(), Post: p.post})
	for i := range 3 {
		c.Send(fmt.Appendf(nil, "q%d", i), nil)
	}
	close(release)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end")
	}
	if err := c.Err(); !errors.Is(err, upstream.ErrGone) {
		t.Fatalf("Err = %v, want ErrGone", err)
	}
	if got := w.waitReceived(3); !slices.Equal(got, []string{"q0", "q1", "q2"}) {
		t.Fatalf("workload read %q", got)
	}
	if n := p.count(); n != 1 {
		t.Fatalf("%d posts after the client was gone, want only the greeting", n)
	}
}

// After Abort's Done nothing more is posted, however much the workload sends.
func TestConn_Abort_NoPostAfterDone(t *testing.T) {
	w := newWorkload(t)
	pushed := make(chan struct{}) // closed once the workload can no longer write to the connection
	w.onFrame = func(c *websocket.Conn, data []byte) {
		go func() {
			defer close(pushed)
			for i := 0; ; i++ {
				if c.Write(context.Background(), websocket.MessageText, fmt.Appendf(nil, "push-%d", i)) != nil {
					return
				}
			}
		}()
	}
	p := newPoster()
	c := open(t, upstream.Config{URL: w.url(), Post: p.post})
	// A post that begins once Done is closed is counted where it happens, so the
	// check below does not depend on how long the test looks.
	var late atomic.Int64
	p.mu.Lock()
	p.err = func(string) error {
		select {
		case <-c.Done():
			late.Add(1)
		default:
		}
		return nil
	}
	p.mu.Unlock()
	c.Send([]byte("start pushing"), nil)
	for p.count() < 50 {
		p.wait(t)
	}
	c.Abort()
	<-c.Done()
	n := p.count()
	select {
	case <-pushed: // the workload's writes fail: the connection is gone on its side too
	case <-time.After(10 * time.Second):
		t.Fatal("the workload could still write after Abort's Done")
	}
	if late.Load() != 0 || p.count() != n {
		t.Fatalf("%d posts began after Done (%d counted since)", late.Load(), p.count()-n)
	}
	if err := c.Err(); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", err)
	}
}

// A workload frame larger than the management API takes is dropped, not posted; the
// connection goes on.
func TestConn_OversizedWorkloadFrame_Dropped(t *testing.T) {
	w := newWorkload(t)
	w.quiet = true
	w.onFrame = func(c *websocket.Conn, data []byte) {
		c.Write(context.Background(), websocket.MessageText, make([]byte, 2000))
		c.Write(context.Background(), websocket.MessageText, []byte("small"))
	}
	p := newPoster()
	c := open(t, upstream.Config{URL: w.url(), Post: p.post, MaxPostBytes: 1000})
	c.Send([]byte("go"), nil)
	if got := p.wait(t); got != "hello" {
		t.Fatal(got)
	}
	if got := p.wait(t); got != "small" {
		t.Fatalf("posted %d bytes, want the oversized frame dropped", len(got))
	}
}

// Close with nothing queued ends without redialling a workload that is gone.
func TestConn_Close_WritesQueueThenEnds(t *testing.T) {
	w := newWorkload(t)
	c := open(t, upstream.Config{URL: w.url(), Post: newPoster().post})
	c.Send([]byte("last words"), nil)
	c.Close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the connection")
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err after Close = %v", err)
	}
	if got := w.waitReceived(1); !slices.Equal(got, []string{"last words"}) {
		t.Fatalf("workload read %q", got)
	}
	if err := c.Send([]byte("late"), nil); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}
}
