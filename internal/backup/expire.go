package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
)

// Defaults of Retention.
const (
	DefaultKeep   = 30
	DefaultMaxAge = 30 * 24 * time.Hour
)

// Retention says which backups of a user are kept: at most Keep of them, none older
// than MaxAge, and always the newest, whatever its age.
type Retention struct {
	Keep   int
	MaxAge time.Duration
}

func (r Retention) keep() int {
	if r.Keep <= 0 {
		return DefaultKeep
	}
	return r.Keep
}

func (r Retention) maxAge() time.Duration {
	if r.MaxAge <= 0 {
		return DefaultMaxAge
	}
	return r.MaxAge
}

// Expired returns the backups of refs (oldest first) that r no longer keeps at now.
func (r Retention) Expired(refs []Ref, now time.Time) []Ref {
	var out []Ref
	for i, ref := range refs {
		fromNewest := len(refs) - 1 - i
		if fromNewest == 0 {
			break
		}
		if fromNewest >= r.keep() || now.Sub(ref.Time) > r.maxAge() {
			out = append(out, ref)
		}
	}
	return out
}

// DeleteManifests deletes the manifests of refs, under l. Their objects stay until a
// sweep finds no manifest naming them.
func DeleteManifests(ctx context.Context, s objsync.Bucket, l *Lock, refs []Ref) (int, error) {
	keys := make([]string, 0, len(refs))
	for _, r := range refs {
		keys = append(keys, r.Key)
	}
	deleted := 0
	for len(keys) > 0 {
		if err := l.Check(); err != nil {
			return deleted, err
		}
		batch := keys[:min(len(keys), objsync.MaxDeleteBatch)]
		keys = keys[len(batch):]
		if err := s.Delete(ctx, batch); err != nil {
			return deleted, fmt.Errorf("delete manifests: %w", err)
		}
		deleted += len(batch)
	}
	return deleted, nil
}

// SweepResult is what a sweep found and did.
type SweepResult struct {
	Manifests  int `json:"manifests"`
	Objects    int `json:"objects"`
	Referenced int `json:"referenced"`
	Deleted    int `json:"deleted"`
	Requests   int `json:"requests"`
}

// Sweep deletes, under l, every object of ObjectsDir that no manifest names and that
// was written before olderThan (mark and sweep: all manifests read first, then the
// objects listed). Holding the lock, no backup runs beside it, so no manifest about
// to name an object is missed; olderThan keeps what an interrupted backup copied for
// the next attempt to reuse. One manifest that cannot be read stops the sweep before
// it deletes anything.
func Sweep(ctx context.Context, s objsync.Bucket, l *Lock, olderThan time.Time) (SweepResult, error) {
	var res SweepResult
	mans, err := listAll(ctx, s, ManifestsDir)
	res.Requests += 1 + len(mans)/1000
	if err != nil {
		return res, fmt.Errorf("sweep: list manifests: %w", err)
	}
	live := map[string]bool{}
	for _, o := range mans {
		ref, ok := parseRef(o.Key)
		if !ok {
			continue
		}
		res.Requests++
		m, err := Load(ctx, s, ref)
		if err != nil {
			return res, fmt.Errorf("sweep: nothing deleted: %w", err)
		}
		res.Manifests++
		for _, e := range m.Entries {
			if e.SHA256 != "" {
				live[e.SHA256] = true
			}
		}
	}
	res.Referenced = len(live)
	objs, err := listAll(ctx, s, ObjectsDir)
	res.Requests += 1 + len(objs)/1000
	if err != nil {
		return res, fmt.Errorf("sweep: list objects: %w", err)
	}
	res.Objects = len(objs)
	var dead []string
	for _, o := range objs {
		if !live[o.Key[len(ObjectsDir):]] && o.LastModified.Before(olderThan) {
			dead = append(dead, o.Key)
		}
	}
	for len(dead) > 0 {
		if err := l.Check(); err != nil {
			return res, fmt.Errorf("sweep: %w", err)
		}
		batch := dead[:min(len(dead), objsync.MaxDeleteBatch)]
		dead = dead[len(batch):]
		res.Requests++
		err := s.Delete(ctx, batch)
		var pe *objsync.PartialError
		switch {
		case err == nil:
			res.Deleted += len(batch)
		case errors.As(err, &pe):
			res.Deleted += len(batch) - len(pe.Failures)
			return res, fmt.Errorf("sweep: %w", err)
		default:
			return res, fmt.Errorf("sweep: %w", err)
		}
	}
	return res, nil
}

// DeleteUser deletes every backup of the user (under l), then sweeps the objects no
// other manifest names (written before olderThan).
func DeleteUser(ctx context.Context, s objsync.Bucket, l *Lock, userID string, olderThan time.Time) (manifests int, sweep SweepResult, err error) {
	refs, err := List(ctx, s, userID)
	if err != nil {
		return 0, sweep, err
	}
	if manifests, err = DeleteManifests(ctx, s, l, refs); err != nil {
		return manifests, sweep, err
	}
	sweep, err = Sweep(ctx, s, l, olderThan)
	return manifests, sweep, err
}
