package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// Sandbox is one user's sandbox as the operator sees it: the record, what ECS says of
// its task, and its connections, queue and last sync.
type Sandbox struct {
	UserID string `json:"userId"`
	// State is the record's; Expired reports a lease past its deadline (its holder
	// presumed dead: the next start takes it over, cleanup reaps it).
	State      string    `json:"state"`
	Expired    bool      `json:"expired,omitempty"`
	Generation int64     `json:"generation"`
	Since      time.Time `json:"since"`
	// LeaseDeadline is when the lease runs out unless renewed.
	LeaseDeadline time.Time `json:"leaseDeadline"`
	Warm          bool      `json:"warm,omitempty"`
	Task          string    `json:"task,omitempty"`
	// TaskStatus is ECS's lastStatus of Task ("" when ECS was not asked, "GONE" when
	// it no longer knows the task).
	TaskStatus string `json:"taskStatus,omitempty"`
	// HoldsSlot reports that the record holds a capacity slot.
	HoldsSlot   bool       `json:"holdsSlot"`
	Connections int        `json:"connections"`
	Queued      int        `json:"queued"`
	LastSync    *time.Time `json:"lastSync,omitempty"`
	Reason      string     `json:"reason,omitempty"`
}

// Age is how long the sandbox has been in its state at now.
func (s Sandbox) Age(now time.Time) time.Duration {
	if s.Since.IsZero() {
		return 0
	}
	return now.Sub(s.Since).Truncate(time.Second)
}

// Filter chooses the sandboxes List returns.
type Filter struct {
	// All includes the STOPPED records that hold no slot.
	All bool
	// States keeps only these states (after All); empty keeps every one.
	States []string
	// UserPrefix keeps only users whose id starts with it.
	UserPrefix string
}

func (f Filter) keep(sb *state.Sandbox, now time.Time) bool {
	// A PURGING lock refuses the user's starts: always worth seeing.
	if !f.All && !sb.Live(now) && !sb.Expired(now) && !sb.HoldsSlot() && sb.State != state.Purging {
		return false
	}
	if f.UserPrefix != "" && !strings.HasPrefix(sb.UserID, f.UserPrefix) {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if strings.EqualFold(s, string(sb.State)) {
			return true
		}
	}
	return false
}

// List returns the sandboxes f keeps, by user id: every record that holds a live or
// expired lease or a capacity slot, or is a purge lock (all records with f.All), each with its task's
// status from ECS, its connections, its queued frames and its last sync.
//
// Calls: a Scan of the records, ListTasks and DescribeTasks, and per sandbox one Query
// of its connections, one GetItem of its inbox counter, one GET of its marker.
func (a *Admin) List(ctx context.Context, f Filter) ([]Sandbox, error) {
	now := a.now()
	var recs []*state.Sandbox
	err := a.Store.ListSandboxes(ctx, func(sb *state.Sandbox) error {
		if f.keep(sb, now) {
			recs = append(recs, sb)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	tasks, err := a.Tasks.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	byARN := map[string]launcher.Task{}
	for _, t := range tasks {
		byARN[t.ARN] = t
	}
	out := make([]Sandbox, 0, len(recs))
	for _, sb := range recs {
		row, err := a.describe(ctx, sb, now, func(arn string) string {
			if t, ok := byARN[arn]; ok {
				return t.LastStatus
			}
			return taskGone
		})
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// taskGone is the TaskStatus of a task ECS does not list (stopped long ago, or never).
const taskGone = "GONE"

// describe is a record's row; status names a task's ECS status.
func (a *Admin) describe(ctx context.Context, sb *state.Sandbox, now time.Time, status func(arn string) string) (Sandbox, error) {
	row := Sandbox{
		UserID: sb.UserID, State: string(sb.State), Expired: sb.Expired(now), Generation: sb.Generation,
		Since: sb.StateSince, LeaseDeadline: sb.LeaseDeadline, Warm: sb.Warm, Task: sb.TaskARN,
		HoldsSlot: sb.HoldsSlot(), Reason: sb.Reason,
	}
	if sb.TaskARN != "" && status != nil {
		row.TaskStatus = status(sb.TaskARN)
	}
	conns, err := a.Store.Connections(ctx, sb.UserID)
	if err != nil {
		return row, err
	}
	row.Connections = len(conns)
	if row.Queued, err = a.Store.Queued(ctx, sb.UserID); err != nil {
		return row, err
	}
	m, err := a.marker(ctx, sb.UserID)
	if err != nil {
		return row, err
	}
	if m != nil {
		t := m.Time
		row.LastSync = &t
	}
	return row, nil
}

// marker reads the user's .last-sync marker; nil when there is none.
func (a *Admin) marker(ctx context.Context, userID string) (*objsync.Marker, error) {
	prefix, err := objsync.UserPrefix(userID)
	if err != nil {
		return nil, err
	}
	_, body, err := a.Bucket.Get(ctx, objsync.MarkerKey(prefix))
	if errors.Is(err, objsync.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the marker of %s: %w", userID, err)
	}
	defer body.Close()
	var m objsync.Marker
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		return nil, fmt.Errorf("read the marker of %s: %w", userID, err)
	}
	return &m, nil
}
