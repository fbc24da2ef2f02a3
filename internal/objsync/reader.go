package objsync

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// checkedReader hands out exactly size bytes of a file and checks them against the
// SHA-256 the object's metadata already claims. If the file changed since it was
// hashed, the read that would complete the body fails instead, so the store never
// receives a whole body that disagrees with its metadata.
type checkedReader struct {
	r      io.ReaderAt
	size   int64
	want   []byte
	off    int64
	h      hash.Hash
	hashed int64 // bytes of [0, off) fed to h; -1 when h must be rebuilt
}

func newCheckedReader(r io.ReaderAt, size int64, sum []byte) *checkedReader {
	return &checkedReader{r: r, size: size, want: sum, h: sha256.New()}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.off >= c.size {
		return 0, io.EOF
	}
	if c.hashed != c.off {
		if err := c.rehash(); err != nil {
			return 0, err
		}
	}
	if rest := c.size - c.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := c.r.ReadAt(p, c.off)
	if n < len(p) {
		if err == nil || errors.Is(err, io.EOF) {
			return 0, errChanged // the file shrank
		}
		return 0, err
	}
	c.h.Write(p[:n])
	c.off += int64(n)
	c.hashed = c.off
	if c.off == c.size && !bytes.Equal(c.h.Sum(nil), c.want) {
		c.off -= int64(n)
		c.hashed = -1
		return 0, errChanged
	}
	return n, nil
}

// Seek lets the SDK rewind the body for a retry.
func (c *checkedReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += c.off
	case io.SeekEnd:
		offset += c.size
	}
	if offset < 0 || offset > c.size {
		return 0, fmt.Errorf("seek to %d: outside [0, %d]", offset, c.size)
	}
	c.off = offset
	if offset == 0 {
		c.h.Reset()
		c.hashed = 0
	}
	return offset, nil
}

// rehash rebuilds the running hash after a seek to the middle of the body.
func (c *checkedReader) rehash() error {
	c.h.Reset()
	if _, err := io.Copy(c.h, io.NewSectionReader(c.r, 0, c.off)); err != nil {
		return err
	}
	c.hashed = c.off
	return nil
}
