package objsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Conditional writes: fencing in the store itself.
//
// The lease's fence (Syncer.Fence) and the marker's generation stop a writer that
// knows, or can see, that it lost its lease. A sandbox cut off from the lease table
// while the store still answers, or paused between its fence check and its request,
// can know neither. So every write also carries a condition the store checks
// atomically with the write: an object is written If-Match the ETag the manifest
// recorded for it (restored, or last written by this writer), or If-None-Match: *
// when the writer believes no object has the key; the marker If-Match the marker this
// writer read at Restore or last wrote (If-None-Match: * when there was none). A
// successor's writes change those ETags, so the stale writer's write is refused with
// 412 and nothing the successor wrote is overwritten.
//
// A refusal is not always a successor: the store may have applied an earlier attempt
// whose answer was lost (the SDK's retry then meets its own write), or a write of an
// earlier sync that timed out. So a refused write reads what the key holds now:
//
//   - an object written by a newer generation (its metadata; for the marker, its
//     content), or no object while the marker is a newer generation's: ErrFenced,
//     and the sync writes nothing more;
//   - an object written by this generation, an older one or another tool: this writer
//     holds the newest lease it can see, so it writes again If-Match that object's
//     ETag — an older writer's late write must not outlive it;
//   - no object (deleted since): it writes again If-None-Match: *.
//
// Deletes carry no condition. S3 accepts If-Match on DeleteObject in general purpose
// buckets (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html),
// but R2 documents conditional headers only on PutObject, CopyObject and the multipart
// calls (https://developers.cloudflare.com/r2/api/s3/conditional-operations/), so a
// delete stays unconditional on both. What bounds a stale delete: it must pass the
// lease's fence, and the marker's generation is read again right before each delete
// batch (so once the successor has finished a sync, a stale writer deletes nothing);
// deletes come after the uploads, and one refused upload stops the sync before them;
// and the keys are only those of files the stale sandbox's own user deleted, which
// the successor restored unless the delete landed first. What remains is a delete
// batch in flight (SDK retries included) at the moment the successor writes one of
// those very keys, before the successor's sync has written its marker.

// maxConditionalAttempts bounds the writes of one key in one sync, the first
// included, when each is refused and the key turns out to hold an object this writer
// may overwrite.
const maxConditionalAttempts = 3

// condition is what a write expects the key to hold.
type condition struct {
	ifMatch     string // the ETag the key's object must have
	ifNoneMatch bool   // no object may have the key
}

// expectETag is the condition of a write over the object with etag ("" for none).
func expectETag(etag string) condition {
	if etag == "" {
		return condition{ifNoneMatch: true}
	}
	return condition{ifMatch: etag}
}

// putConditional writes in under cond and returns the new ETag. A refused condition is
// resolved by resolve (ErrFenced, or the condition to try again with), fenced again
// and retried, at most maxConditionalAttempts writes in all.
func (s *Syncer) putConditional(ctx context.Context, in PutInput, cond condition,
	resolve func(context.Context) (condition, error),
) (string, error) {
	for attempt := 1; ; attempt++ {
		in.IfMatch, in.IfNoneMatch = cond.ifMatch, cond.ifNoneMatch
		etag, err := s.bucket.Put(ctx, in)
		if !errors.Is(err, ErrPrecondition) {
			return etag, err
		}
		if attempt == maxConditionalAttempts {
			return "", fmt.Errorf("write %s: refused %d times, the key keeps changing: %w", in.Key, attempt, err)
		}
		if cond, err = resolve(ctx); err != nil {
			return "", err
		}
		if err := s.fence(ctx); err != nil {
			return "", err
		}
		if _, err := in.Body.Seek(0, io.SeekStart); err != nil {
			return "", fmt.Errorf("write %s: rewind body: %w", in.Key, err)
		}
	}
}

// resolveObject decides what a refused write of key meets (see above).
func (s *Syncer) resolveObject(key string, log *slog.Logger) func(context.Context) (condition, error) {
	return func(ctx context.Context) (condition, error) {
		info, body, err := s.bucket.Get(ctx, key)
		switch {
		case errors.Is(err, ErrNotFound):
			// Deleted since this writer saw it: by itself (a delete whose answer was
			// lost), by an older writer, or by a newer one, whose marker may say so.
			if err := s.checkRemoteGeneration(ctx, log); err != nil {
				return condition{}, err
			}
			log.Warn("object deleted since this sandbox saw it; writing it again", keyPath, key)
			return condition{ifNoneMatch: true}, nil
		case err != nil:
			return condition{}, fmt.Errorf("read %s after a refused write: %w", key, err)
		}
		body.Close()
		gen, ok := writerGeneration(info.Meta)
		if s.Generation > 0 && ok && gen > s.Generation {
			log.Warn("a newer generation wrote the object; writing nothing more", keyPath, key, keyGeneration, gen)
			return condition{}, fmt.Errorf("%w: %s was written by generation %d, ours is %d", ErrFenced, key, gen, s.Generation)
		}
		if !ok || gen != s.Generation {
			log.Warn("object changed by an older writer since this sandbox saw it; writing over it", keyPath, key, keyGeneration, gen)
		}
		return condition{ifMatch: info.ETag}, nil
	}
}

// resolveMarker decides what a refused marker write meets: a newer generation's
// marker fences; any other is written over.
func (s *Syncer) resolveMarker(log *slog.Logger) func(context.Context) (condition, error) {
	return func(ctx context.Context) (condition, error) {
		m, etag, err := s.readMarker(ctx, log)
		if err != nil {
			return condition{}, fmt.Errorf("read marker after a refused write: %w", err)
		}
		if err := s.checkGeneration(m); err != nil {
			log.Warn("a newer generation wrote the marker; writing nothing more", keyGeneration, m.Generation)
			return condition{}, err
		}
		if m == nil || m.Generation != s.Generation {
			log.Warn("marker changed by an older writer since this sandbox saw it; writing over it")
		}
		return expectETag(etag), nil
	}
}
