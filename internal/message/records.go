package message

import (
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// DefaultRecordTTL is how long a Message process reuses a RUNNING record it has read, so
// that a busy connection's frames skip the read. Nothing it could miss goes unnoticed:
// every way the record can go stale (the agent stopping, dying, or replaced by another
// at a new address or token) shows in the agent's answer, and then the record is read
// again before anything is decided.
const DefaultRecordTTL = 5 * time.Second

// maxRecords bounds the cache; past it, the cache starts over.
const maxRecords = 10_000

// records caches RUNNING sandbox records per user within one process.
type records struct {
	mu sync.Mutex
	m  map[string]record
}

type record struct {
	sb    *state.Sandbox
	until time.Time
}

func (r *records) get(userID string, now time.Time) *state.Sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.m[userID]
	if !ok || !now.Before(rec.until) {
		return nil
	}
	return rec.sb
}

func (r *records) put(sb *state.Sandbox, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= maxRecords {
		r.m = make(map[string]record)
	}
	r.m[sb.UserID] = record{sb: sb, until: until}
}

func (r *records) drop(userID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, userID)
}
