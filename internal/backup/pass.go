package backup

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
)

// DefaultSweepEvery is how often a pass sweeps when it expired nothing itself: the
// contents left by interrupted backups and by deletions whose own sweep could not run.
const DefaultSweepEvery = 24 * time.Hour

// DefaultSweepGrace is how long an unreferenced content is kept: what a failed backup
// copied stays this long for the next pass to reuse rather than copy again.
const DefaultSweepGrace = 6 * time.Hour

// Pass backs up many users under one hold of the lock, then expires and sweeps.
type Pass struct {
	Backer
	Retention Retention
	// Holder names this writer in the lock.
	Holder string
	// Term is the lock's term (DefaultLockTerm when zero; never past the context's
	// deadline plus a margin).
	Term time.Duration
	// SweepEvery is DefaultSweepEvery when zero; SweepGrace DefaultSweepGrace.
	SweepEvery, SweepGrace time.Duration
}

// Summary is what a pass did.
type Summary struct {
	Users     int `json:"users"`
	BackedUp  int `json:"backedUp"`
	Unchanged int `json:"unchanged"`
	// Deferred counts users whose prefix changed during their backup (a sync ran):
	// no manifest, the next pass tries again.
	Deferred int `json:"deferred"`
	// NoMarker counts users with nothing synced yet; Unhashed users with an object no
	// sync wrote (ErrUnhashed), who are not backed up.
	NoMarker    int   `json:"noMarker"`
	Unhashed    int   `json:"unhashed"`
	Copied      int   `json:"copied"`
	CopiedBytes int64 `json:"copiedBytes"`
	Expired     int   `json:"expired"`
	// Forgotten counts the manifests deleted of users whose data was purged.
	Forgotten int `json:"forgotten"`
	Swept     int `json:"swept"`
	Requests  int `json:"requests"`
	Errors    int `json:"errors"`
	// Busy: another writer held the lock; the pass did nothing.
	Busy bool `json:"busy,omitempty"`
}

// Run backs up each of users whose marker changed since their newest backup, expires
// what the retention no longer keeps, and sweeps when it expired anything (or the last
// sweep is older than SweepEvery). A user's failure is counted and logged, and the
// pass goes on; a lost lock, or the context's end, stops it.
func (p *Pass) Run(ctx context.Context, users []string) (Summary, error) {
	return p.RunForgetting(ctx, users, nil)
}

// RunForgetting is Run that first deletes every backup of the users in forget (whose
// data was purged), before the sweep.
func (p *Pass) RunForgetting(ctx context.Context, users, forget []string) (Summary, error) {
	var sum Summary
	log := p.log()
	term := p.Term
	if term <= 0 {
		term = DefaultLockTerm
	}
	if d, ok := ctx.Deadline(); ok {
		term = min(term, time.Until(d)+lockSafety+time.Minute)
	}
	l, err := Acquire(ctx, p.Store, p.Holder, term, p.Now)
	sum.Requests += 2
	if errors.Is(err, ErrBusy) {
		sum.Busy = true
		log.Info("backups skipped: the lock is held", logging.Error, err.Error())
		return sum, nil
	}
	if err != nil {
		return sum, err
	}
	defer func() {
		if err := l.Release(ctx); err != nil {
			log.Warn("backups lock not released; it lapses at its term", logging.Error, err.Error())
		}
	}()
	for _, u := range forget {
		refs, err := List(ctx, p.Store, u)
		sum.Requests++
		if err == nil {
			var n int
			n, err = DeleteManifests(ctx, p.Store, l, refs)
			sum.Forgotten += n
			sum.Requests += (n + objsync.MaxDeleteBatch - 1) / objsync.MaxDeleteBatch
		}
		if err != nil {
			sum.Errors++
			log.Error("backups of a purged user not deleted", logging.UserID, u, logging.Error, err.Error())
		}
	}
	known := map[string]bool{}
	for _, u := range users {
		if err := l.Check(); err != nil {
			return sum, err
		}
		if ctx.Err() != nil {
			return sum, ctx.Err()
		}
		sum.Users++
		res, err := p.Backup(ctx, l, u, Options{Reason: "scheduled", Known: known})
		sum.Requests += res.Requests
		sum.Copied += res.Copied
		sum.CopiedBytes += res.CopiedBytes
		switch {
		case err == nil && res.Unchanged:
			sum.Unchanged++
		case err == nil:
			sum.BackedUp++
		case errors.Is(err, ErrNoMarker):
			sum.NoMarker++
			continue
		case errors.Is(err, ErrUnhashed):
			sum.Unhashed++
			log.Warn("user not backed up: an object of theirs has no sha256", logging.UserID, u, logging.Error, err.Error())
			continue
		case errors.Is(err, ErrChanged):
			sum.Deferred++
			log.Info("backup deferred to the next pass", logging.UserID, u, logging.Error, err.Error())
			continue
		case errors.Is(err, ErrLockLost):
			return sum, err
		default:
			sum.Errors++
			log.Error("backup failed", logging.UserID, u, logging.Error, err.Error())
			continue
		}
		if res.Unchanged {
			continue // nothing new: what it keeps was judged when its newest was made
		}
		refs, err := List(ctx, p.Store, u)
		sum.Requests++
		if err != nil {
			sum.Errors++
			log.Error("backups not expired", logging.UserID, u, logging.Error, err.Error())
			continue
		}
		if old := p.Retention.Expired(refs, p.now()); len(old) > 0 {
			n, err := DeleteManifests(ctx, p.Store, l, old)
			sum.Expired += n
			sum.Requests += (len(old) + objsync.MaxDeleteBatch - 1) / objsync.MaxDeleteBatch
			if err != nil {
				sum.Errors++
				log.Error("backups not expired", logging.UserID, u, logging.Error, err.Error())
			}
		}
	}
	if sum.Expired+sum.Forgotten > 0 || p.sweepDue(ctx, &sum) {
		grace := p.SweepGrace
		if grace <= 0 {
			grace = DefaultSweepGrace
		}
		sw, err := Sweep(ctx, p.Store, l, p.now().Add(-grace))
		sum.Requests += sw.Requests
		sum.Swept = sw.Deleted
		if err != nil {
			sum.Errors++
			log.Error("sweep failed", logging.Error, err.Error())
		} else {
			p.markSwept(ctx, &sum)
		}
	}
	return sum, nil
}

// sweepDue reports whether the last full sweep is older than SweepEvery.
func (p *Pass) sweepDue(ctx context.Context, sum *Summary) bool {
	every := p.SweepEvery
	if every <= 0 {
		every = DefaultSweepEvery
	}
	sum.Requests++
	_, body, err := p.Store.Get(ctx, SweptKey)
	if err != nil {
		return true
	}
	defer body.Close()
	data, _ := io.ReadAll(io.LimitReader(body, 256))
	var t time.Time
	if json.Unmarshal(data, &t) != nil {
		return true
	}
	return p.now().Sub(t) >= every
}

func (p *Pass) markSwept(ctx context.Context, sum *Summary) {
	data, _ := json.Marshal(p.now().UTC())
	sum.Requests++
	if _, err := p.Store.Put(ctx, objsync.PutInput{Key: SweptKey, Body: strings.NewReader(string(data)), Size: int64(len(data))}); err != nil {
		p.log().Warn("sweep time not recorded; the next pass sweeps again", logging.Error, err.Error())
	}
}
