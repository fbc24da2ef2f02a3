package objsync

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// castagnoli is the CRC-32C table; the CPU computes it (SSE4.2, ARMv8 CRC) far faster
// than a second SHA-256 pass.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkedReader hands out exactly size bytes of a file and checks them against the
// CRC-32C taken while the file was hashed for the object's SHA-256 metadata. If the
// file changed in between, the read that would complete the body fails instead, so
// the store never receives a whole body that disagrees with its metadata. (A change
// that kept the CRC, one chance in four billion, would still be caught by Restore,
// which checks every SHA-256 and reports ErrCorrupt rather than write the file.)
type checkedReader struct {
	r      io.ReaderAt
	size   int64
	want   uint32
	off    int64
	crc    uint32
	hashed int64 // bytes of [0, off) in crc; -1 when it must be rebuilt
}

func newCheckedReader(r io.ReaderAt, size int64, crc uint32) *checkedReader {
	return &checkedReader{r: r, size: size, want: crc}
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
	crc := crc32.Update(c.crc, castagnoli, p[:n])
	if c.off+int64(n) == c.size && crc != c.want {
		c.hashed = -1
		return 0, errChanged
	}
	c.crc = crc
	c.off += int64(n)
	c.hashed = c.off
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
		c.crc, c.hashed = 0, 0
	}
	return offset, nil
}

// rehash rebuilds the running CRC after a seek to the middle of the body.
func (c *checkedReader) rehash() error {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(c.r, 0, c.off)); err != nil {
		return err
	}
	c.crc, c.hashed = h.Sum32(), c.off
	return nil
}
