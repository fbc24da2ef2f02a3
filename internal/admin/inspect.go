package admin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// Report is everything about one user (Inspect).
type Report struct {
	UserID string `json:"userId"`
	// Sandbox is the record with its task's status, connections, queue and last
	// sync; nil when the user has no record.
	Sandbox *Sandbox `json:"sandbox,omitempty"`
	// Task is what ECS says of the task the record names; nil when it names none.
	Task *TaskInfo `json:"task,omitempty"`
	// Access is the user's limits and revocation; nil when the user has no access item.
	Access      *AccessInfo      `json:"access,omitempty"`
	Connections []ConnectionInfo `json:"connections"`
	Inbox       InboxInfo        `json:"inbox"`
	Storage     StorageInfo      `json:"storage"`
	// RecentTasks are the user's tasks ECS reports stopped (it keeps them about an
	// hour), newest first: how their recent starts and runs ended. A task StopTask
	// stopped has lost its tags, and shows only while the record names it.
	RecentTasks []TaskInfo `json:"recentTasks"`
	// Items are the keys of every table item holding something of the user.
	Items []string `json:"items"`
}

// TaskInfo is one task as ECS describes it.
type TaskInfo struct {
	ARN           string    `json:"arn"`
	LastStatus    string    `json:"lastStatus"`
	DesiredStatus string    `json:"desiredStatus,omitempty"`
	Generation    int64     `json:"generation,omitempty"`
	PoolID        string    `json:"poolId,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
	StopCode      string    `json:"stopCode,omitempty"`
	StoppedReason string    `json:"stoppedReason,omitempty"`
}

func taskInfo(t launcher.Task) TaskInfo {
	return TaskInfo{ARN: t.ARN, LastStatus: t.LastStatus, DesiredStatus: t.DesiredStatus, Generation: t.Generation,
		PoolID: t.PoolID, CreatedAt: t.CreatedAt, StopCode: t.StopCode, StoppedReason: t.StoppedReason}
}

// AccessInfo is the user's access item.
type AccessInfo struct {
	// Counted is how many connections count against the user's cap.
	Counted int `json:"counted"`
	// NotBefore is the user's revocation: URLs that may have been signed before it
	// are refused.
	NotBefore *time.Time `json:"notBefore,omitempty"`
}

// ConnectionInfo is one connection record.
type ConnectionInfo struct {
	ID          string    `json:"id"`
	ConnectedAt time.Time `json:"connectedAt"`
}

// InboxInfo is the user's queue of frames waiting for a sandbox.
type InboxInfo struct {
	Queued int        `json:"queued"`
	Bytes  int        `json:"bytes"`
	Oldest *time.Time `json:"oldest,omitempty"`
}

// StorageInfo is the user's prefix.
type StorageInfo struct {
	Prefix  string `json:"prefix"`
	Objects int    `json:"objects"`
	Bytes   int64  `json:"bytes"`
	// LastSync and SyncGeneration are the marker's: when the last finished sync
	// began, and which generation wrote it; nil and 0 without a marker.
	LastSync       *time.Time `json:"lastSync,omitempty"`
	SyncGeneration int64      `json:"syncGeneration,omitempty"`
}

// Inspect returns everything about userID. A user of whom nothing is stored (no
// record, item or object) is ErrUnknownUser.
func (a *Admin) Inspect(ctx context.Context, userID string) (*Report, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	now := a.now()
	r := &Report{UserID: userID, Connections: []ConnectionInfo{}, RecentTasks: []TaskInfo{}, Items: []string{}}
	sb, err := a.Store.Get(ctx, userID)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	if sb != nil {
		var task *launcher.Task
		row, err := a.describe(ctx, sb, now, func(arn string) string {
			t, err := a.Tasks.Describe(ctx, arn)
			if err != nil {
				return taskGone
			}
			task = &t
			return t.LastStatus
		})
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", userID, err)
		}
		r.Sandbox = &row
		if task != nil {
			ti := taskInfo(*task)
			r.Task = &ti
		}
	}
	if acc, err := a.Store.Access(ctx, userID); err == nil {
		r.Access = &AccessInfo{Counted: acc.Live(now)}
		if !acc.NotBefore.IsZero() {
			nb := acc.NotBefore
			r.Access.NotBefore = &nb
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	conns, err := a.Store.Connections(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	for _, c := range conns {
		r.Connections = append(r.Connections, ConnectionInfo{ID: c.ConnectionID, ConnectedAt: c.ConnectedAt})
	}
	inbox, err := a.Store.Inbox(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	r.Inbox.Queued = len(inbox)
	for i, it := range inbox {
		r.Inbox.Bytes += len(it.Payload)
		if i == 0 {
			t := it.EnqueuedAt
			r.Inbox.Oldest = &t
		}
	}
	if r.Storage, err = a.storage(ctx, userID, true); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	stopped, err := a.Tasks.ListStopped(ctx)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	for _, t := range stopped {
		// ECS deletes a task's tags when StopTask stops it: such a task is known as the
		// user's only while the record still names it.
		if t.UserID == userID || sb != nil && sb.TaskARN != "" && t.ARN == sb.TaskARN {
			r.RecentTasks = append(r.RecentTasks, taskInfo(t))
		}
	}
	sort.Slice(r.RecentTasks, func(i, j int) bool { return r.RecentTasks[i].CreatedAt.After(r.RecentTasks[j].CreatedAt) })
	keys, err := a.Store.UserItems(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", userID, err)
	}
	for _, k := range keys {
		r.Items = append(r.Items, k.String())
	}
	if len(keys) == 0 && r.Storage.Objects == 0 && len(r.RecentTasks) == 0 {
		return nil, fmt.Errorf("%s: %w", userID, ErrUnknownUser)
	}
	return r, nil
}

// storage sums the user's prefix and, withMarker, reads its marker.
func (a *Admin) storage(ctx context.Context, userID string, withMarker bool) (StorageInfo, error) {
	prefix, err := objsync.UserPrefix(userID)
	if err != nil {
		return StorageInfo{}, err
	}
	si := StorageInfo{Prefix: prefix}
	token := ""
	for {
		page, err := a.Bucket.List(ctx, prefix, token)
		if err != nil {
			return si, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, o := range page.Objects {
			si.Objects++
			si.Bytes += o.Size
		}
		if page.Next == "" {
			break
		}
		token = page.Next
	}
	if !withMarker {
		return si, nil
	}
	m, err := a.marker(ctx, userID)
	if err != nil {
		return si, err
	}
	if m != nil {
		t := m.Time
		si.LastSync, si.SyncGeneration = &t, m.Generation
	}
	return si, nil
}
