package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
)

// DefaultLockTerm bounds how long a lock holder may write: a Lambda runs at most 15
// minutes, so a holder that died is replaced within this.
const DefaultLockTerm = 15 * time.Minute

// lockSafety is kept off the term's end: a holder stops writing this long before its
// term runs out, so a write in flight cannot land after another holder took over.
const lockSafety = 30 * time.Second

// lockBody is the lock object's content.
type lockBody struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// Lock is the backups area's one writer lock: every write of manifests and objects
// (a backup, expiry, sweep, a user's deletion, a restore's own backup) happens under
// it, so a sweep never runs beside a backup that is about to name an object the sweep
// found unreferenced. It is an object written with S3's and R2's conditional writes
// (If-None-Match: * to create, If-Match to take over an expired one or give it back).
type Lock struct {
	store  objsync.Bucket
	holder string
	etag   string
	until  time.Time // writes stop at until - lockSafety
	now    func() time.Time
}

// BusyError is ErrBusy with the holder and its term.
type BusyError struct {
	Holder string
	Until  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%v: %s until %s", ErrBusy, e.Holder, e.Until.UTC().Format(time.RFC3339))
}

func (e *BusyError) Unwrap() error { return ErrBusy }

// Acquire takes the lock for holder for term (DefaultLockTerm when zero), or gives a
// *BusyError while another holder's term runs.
func Acquire(ctx context.Context, b objsync.Bucket, holder string, term time.Duration, now func() time.Time) (*Lock, error) {
	if now == nil {
		now = time.Now
	}
	if term <= 0 {
		term = DefaultLockTerm
	}
	info, body, err := b.Get(ctx, LockKey)
	var cur lockBody
	switch {
	case errors.Is(err, objsync.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("acquire backups lock: %w", err)
	default:
		data, rerr := io.ReadAll(io.LimitReader(body, 4096))
		body.Close()
		if rerr != nil {
			return nil, fmt.Errorf("acquire backups lock: %w", rerr)
		}
		if json.Unmarshal(data, &cur) == nil && now().Before(cur.Expires) {
			return nil, &BusyError{Holder: cur.Holder, Until: cur.Expires}
		}
	}
	l := &Lock{store: b, holder: holder, until: now().Add(term), now: now}
	data, _ := json.Marshal(lockBody{Holder: holder, Expires: l.until})
	in := objsync.PutInput{Key: LockKey, Body: strings.NewReader(string(data)), Size: int64(len(data))}
	if err != nil { // none yet
		in.IfNoneMatch = true
	} else {
		in.IfMatch = info.ETag
	}
	l.etag, err = b.Put(ctx, in)
	if errors.Is(err, objsync.ErrPrecondition) {
		return nil, &BusyError{Holder: "another writer (taken just now)", Until: now().Add(term)}
	}
	if err != nil {
		return nil, fmt.Errorf("acquire backups lock: %w", err)
	}
	return l, nil
}

// AcquireWait retries Acquire while the lock is busy, polling every poll, for at most
// wait.
func AcquireWait(ctx context.Context, b objsync.Bucket, holder string, term, wait, poll time.Duration, now func() time.Time) (*Lock, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := Acquire(ctx, b, holder, term, now)
		if !errors.Is(err, ErrBusy) || time.Now().Add(poll).After(deadline) {
			return l, err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Check says whether the holder may still write.
func (l *Lock) Check() error {
	if l == nil || !l.now().Before(l.until.Add(-lockSafety)) {
		return ErrLockLost
	}
	return nil
}

// Release gives the lock back (an expired body, written If-Match the holder's own), so
// the next writer need not wait for the term. A lock already taken over is left alone.
func (l *Lock) Release(ctx context.Context) error {
	data, _ := json.Marshal(lockBody{Holder: l.holder})
	_, err := l.store.Put(context.WithoutCancel(ctx), objsync.PutInput{Key: LockKey, Body: strings.NewReader(string(data)),
		Size: int64(len(data)), IfMatch: l.etag})
	if err != nil && !errors.Is(err, objsync.ErrPrecondition) {
		return fmt.Errorf("release backups lock: %w", err)
	}
	return nil
}
