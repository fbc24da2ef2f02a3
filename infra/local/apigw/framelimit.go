package apigw

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// frameWatcher reads a client's byte stream beneath the WebSocket library and notes
// any frame longer than the limit. API Gateway limits frames (32 KB) separately from
// messages (128 KB), and the library only reports whole messages.
type frameWatcher struct {
	net.Conn
	r        io.Reader
	limit    int64
	exceeded atomic.Bool

	// Header parsing state.
	hdr  []byte // bytes of the current header collected so far
	skip int64  // payload bytes left in the current frame
}

func (f *frameWatcher) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.scan(p[:n])
	return n, err
}

func (f *frameWatcher) scan(b []byte) {
	for len(b) > 0 {
		if f.skip > 0 {
			k := min(int64(len(b)), f.skip)
			f.skip -= k
			b = b[k:]
			continue
		}
		f.hdr = append(f.hdr, b[0])
		b = b[1:]
		need, length, ok := headerLen(f.hdr)
		if !ok || len(f.hdr) < need {
			continue
		}
		if length > f.limit {
			f.exceeded.Store(true)
		}
		f.skip = length
		f.hdr = f.hdr[:0]
	}
}

// headerLen reports the full header length of a frame whose first bytes are h and,
// once h holds enough of it, the payload length.
func headerLen(h []byte) (need int, length int64, ok bool) {
	if len(h) < 2 {
		return 2, 0, false
	}
	masked := h[1]&0x80 != 0
	l7 := int64(h[1] & 0x7f)
	need = 2
	switch l7 {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if masked {
		need += 4
	}
	if len(h) < need {
		return need, 0, true
	}
	switch l7 {
	case 126:
		length = int64(h[2])<<8 | int64(h[3])
	case 127:
		for _, c := range h[2:10] {
			length = length<<8 | int64(c)
		}
	default:
		length = l7
	}
	return need, length, true
}

// watchingWriter hands the WebSocket library a hijacked connection read through a
// frameWatcher.
type watchingWriter struct {
	http.ResponseWriter
	limit   int64
	watcher *frameWatcher
}

func (w *watchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	w.watcher = &frameWatcher{Conn: conn, r: io.MultiReader(bytes.NewReader(append([]byte(nil), buffered...)), conn), limit: w.limit}
	return w.watcher, bufio.NewReadWriter(bufio.NewReader(w.watcher), brw.Writer), nil
}
