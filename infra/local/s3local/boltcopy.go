package s3local

import (
	"bytes"
	"encoding/hex"
	"time"

	"github.com/johannesboyne/gofakes3"
)

// boltCopy is the bbolt backend with a CopyObject that does not crash: gofakes3 v1.2.0's
// (gofakes3.CopyObject, which s3bolt calls) reads the source's hash after writing the
// copy, but s3bolt decodes that hash in place from bbolt's memory map, which the write
// may have remapped, so the read faults (SIGSEGV: the whole local stack dies on a
// server-side copy, as an operator's import-bucket makes). Here the source is read and
// its hash copied before anything is written. The memory backend needs none of this.
type boltCopy struct{ gofakes3.Backend }

func (b boltCopy) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	src, err := b.GetObject(srcBucket, srcKey, nil)
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	hash := bytes.Clone(src.Hash)
	body, err := gofakes3.ReadAll(src.Contents, src.Size)
	src.Contents.Close()
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	if _, err := b.PutObject(dstBucket, dstKey, meta, bytes.NewReader(body), int64(len(body)), nil); err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	return gofakes3.CopyObjectResult{ETag: `"` + hex.EncodeToString(hash) + `"`, LastModified: gofakes3.NewContentTime(time.Now())}, nil
}
