package apiproxy

import (
	"bytes"
	"io"
)

// Redacted replaces the key wherever an answer holds it.
const Redacted = "[redacted by sandgate]"

// scrubber passes a body through with every occurrence of the key replaced, as it
// streams: it holds back only a tail that could be the start of the key (a streamed
// event ends with a line break, which no key begins with, so events are not delayed).
type scrubber struct {
	r    io.ReadCloser
	key  []byte
	tap  func([]byte) // sees the scrubbed bytes (the usage meter); may be nil
	out  []byte       // scrubbed, not yet returned
	tail []byte       // read, possibly the key's beginning
	buf  []byte
	err  error
}

func newScrubber(r io.ReadCloser, key string, tap func([]byte)) *scrubber {
	return &scrubber{r: r, key: []byte(key), tap: tap, buf: make([]byte, 32<<10)}
}

func (s *scrubber) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		n, err := s.r.Read(s.buf)
		data := append(s.tail, s.buf[:n]...)
		s.tail = nil
		if len(s.key) > 0 {
			data = bytes.ReplaceAll(data, s.key, []byte(Redacted))
		}
		if err == nil {
			k := heldBack(data, s.key)
			s.tail = append([]byte(nil), data[len(data)-k:]...)
			data = data[:len(data)-k]
		}
		s.err = err
		if s.tap != nil && len(data) > 0 {
			s.tap(data)
		}
		s.out = data
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

func (s *scrubber) Close() error { return s.r.Close() }

// heldBack is the length of the longest tail of data that is a proper prefix of key.
func heldBack(data, key []byte) int {
	for k := min(len(key)-1, len(data)); k > 0; k-- {
		if bytes.Equal(data[len(data)-k:], key[:k]) {
			return k
		}
	}
	return 0
}
