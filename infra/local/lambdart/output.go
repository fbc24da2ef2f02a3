package lambdart

import (
	"bytes"
	"io"
	"sync"
)

// maxLine bounds one buffered output line; Lambda cuts log events at 256 KB too.
const maxLine = 256 * 1024

// lineSink serialises whole lines from every process onto one writer.
type lineSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *lineSink) writeLine(prefix string, line []byte) {
	if s.w == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(append(append(buf, prefix...), line...), '\n')
	_, _ = s.w.Write(buf)
}

// lineWriter is a process's stdout or stderr: it splits the stream into lines and
// tags each with the function's name.
type lineWriter struct {
	sink   *lineSink
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.sink.writeLine(l.prefix, bytes.TrimRight(l.buf[:i], "\r"))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > maxLine {
		l.sink.writeLine(l.prefix, l.buf)
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.sink.writeLine(l.prefix, l.buf)
		l.buf = nil
	}
}
