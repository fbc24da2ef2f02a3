package ecslocal

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// forwardDialTimeout bounds how long a forwarded connection waits for its far side.
const forwardDialTimeout = 10 * time.Second

// forwarder passes every connection its listener accepts on to what dial connects
// to, byte for byte in both directions, until Close.
type forwarder struct {
	ln   net.Listener
	dial func() (net.Conn, error)
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func forward(ln net.Listener, dial func() (net.Conn, error), log *slog.Logger) *forwarder {
	f := &forwarder{ln: ln, dial: dial, log: log, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("forwarder stopped accepting", logAddress, f.ln.Addr().String(), logging.Error, err.Error())
			}
			return
		}
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			far, err := f.dial()
			if err != nil {
				f.log.Debug("forwarded connection refused", logAddress, f.ln.Addr().String(), logging.Error, err.Error())
				return
			}
			if !f.track(far) {
				far.Close()
				return
			}
			defer f.untrack(far)
			pipe(c, far)
		}()
	}
}

// track registers c to be closed by Close; false when Close has begun.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// Close stops accepting, cuts every forwarded connection and waits for them to end.
func (f *forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	err := f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

// pipe copies a to b and b to a, passing each side's end of stream on as a half
// close, until both directions are done.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
}
