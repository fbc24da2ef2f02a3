package s3bucket_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

func TestBucket_Copy_OneCallOrPartsServerSide(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	e.bucket.MultipartCopyThreshold, e.bucket.CopyPartSize = 6<<20, 5<<20
	small := "hello"
	big := strings.Repeat("0123456789abcdef", (11<<20)/16+3) // 11 MiB and 48 bytes: three parts
	meta := map[string]string{"sha256": strings.Repeat("cd", 32), "type": "file", "mode": "0600"}
	smallTag := put(t, e.bucket, "users/user_a/files/a b+c.txt", small, meta)
	bigTag := put(t, e.bucket, "users/user_a/files/big", big, meta)

	for _, c := range []struct{ src, body, etag string }{
		{"users/user_a/files/a b+c.txt", small, smallTag},
		{"users/user_a/files/big", big, bigTag},
	} {
		before := len(e.rec.requests())
		dst := "backups/objects/" + strings.ReplaceAll(c.src, "/", "_")
		if err := e.bucket.Copy(ctx, objsync.CopyInput{Src: c.src, Dst: dst, Size: int64(len(c.body)), SrcIfMatch: c.etag}); err != nil {
			t.Fatalf("copy %s: %v", c.src, err)
		}
		for _, r := range e.rec.requests()[before:] {
			if r.ContentLength > 0 && r.Method != "POST" { // CompleteMultipartUpload's list of parts
				t.Errorf("a copy sent a body: %s %s (%d bytes)", r.Method, r.URL, r.ContentLength)
			}
		}
		info, got := get(t, e.bucket, dst)
		if got != c.body || info.Meta["sha256"] != meta["sha256"] || info.Meta["mode"] != "0600" {
			t.Fatalf("copy of %s: %d bytes, meta %v", c.src, len(got), info.Meta)
		}
	}
	parts := 0
	for _, r := range e.rec.requests() {
		if r.URL.Query().Has("partNumber") && r.Header.Get("X-Amz-Copy-Source-Range") != "" {
			parts++
		}
	}
	if parts != 3 {
		t.Fatalf("%d UploadPartCopy requests, want 3", parts)
	}

	// The source changed since it was listed: nothing copied.
	put(t, e.bucket, "users/user_a/files/a b+c.txt", "changed", meta)
	for _, size := range []int64{5, 7 << 20} {
		err := e.bucket.Copy(ctx, objsync.CopyInput{Src: "users/user_a/files/a b+c.txt", Dst: "backups/objects/stale", Size: size, SrcIfMatch: smallTag})
		if !errors.Is(err, objsync.ErrPrecondition) {
			t.Fatalf("copy of a changed source (size %d): %v, want ErrPrecondition", size, err)
		}
	}
	if _, err := e.bucket.Head(ctx, "backups/objects/stale"); !errors.Is(err, objsync.ErrNotFound) {
		t.Fatalf("a refused copy wrote: %v", err)
	}
}
