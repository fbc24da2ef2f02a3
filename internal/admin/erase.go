package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// Deletion is what DeleteUser would delete (a plan) or deleted.
type Deletion struct {
	UserID string `json:"userId"`
	DryRun bool   `json:"dryRun"`
	// State is the sandbox record's state before ("" without a record).
	State string `json:"state,omitempty"`
	// Prefix holds the user's objects: Objects of them, Bytes in all.
	Prefix  string `json:"prefix"`
	Objects int    `json:"objects"`
	Bytes   int64  `json:"bytes"`
	// Items are the keys of the user's table items.
	Items []string `json:"items"`
	// Kept is what stays: the access item reduced to the revocation, until DynamoDB's
	// TTL deletes it after the URLs it refuses have expired.
	Kept string `json:"kept,omitempty"`
	// NotBefore is the revocation written (not on a dry run).
	NotBefore *time.Time `json:"notBefore,omitempty"`
	// Backups counts the user's backups (manifests in backups/manifests/<id>/).
	Backups int `json:"backups"`
	// Deleted counts what was deleted: objects and items; DeletedBackups the user's
	// manifests and the contents no other backup named.
	DeletedObjects int `json:"deletedObjects"`
	DeletedItems   int `json:"deletedItems"`
	DeletedBackups int `json:"deletedBackups"`
}

// PlanDeletion says what DeleteUser would delete, changing nothing.
func (a *Admin) PlanDeletion(ctx context.Context, userID string) (*Deletion, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	d := &Deletion{UserID: userID, DryRun: true, Items: []string{}}
	sb, err := a.Store.Get(ctx, userID)
	switch {
	case err == nil:
		d.State = string(sb.State)
	case !errors.Is(err, state.ErrNotFound):
		return nil, fmt.Errorf("plan deletion of %s: %w", userID, err)
	}
	si, err := a.storage(ctx, userID, false)
	if err != nil {
		return nil, fmt.Errorf("plan deletion of %s: %w", userID, err)
	}
	d.Prefix, d.Objects, d.Bytes = si.Prefix, si.Objects, si.Bytes
	refs, err := backup.List(ctx, a.Bucket, userID)
	if err != nil {
		return nil, fmt.Errorf("plan deletion of %s: %w", userID, err)
	}
	d.Backups = len(refs)
	keys, err := a.Store.UserItems(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("plan deletion of %s: %w", userID, err)
	}
	for _, k := range keys {
		d.Items = append(d.Items, k.String())
	}
	return d, nil
}

// DeleteUser erases userID: revokes them (closing their connections, refusing their
// URLs), stops their sandbox and waits for it (its final sync included, so nothing is
// written after), then under the purge lock — which refuses any start meanwhile —
// deletes their prefix, their backups (and the contents no other backup names) and
// every table item of theirs, the record last. What stays
// is the access item reduced to the revocation (Deletion.Kept), which DynamoDB's TTL
// removes after every URL it refuses has expired. Nothing of another user is read or
// written beyond the shared capacity counter, which the stop moves as any stop does.
//
// It resumes: a deletion that failed partway (its purge lock left, refusing starts)
// is finished by running it again once that lock's term has passed (ErrMidPurge
// before). A user of whom nothing is stored is deleted all the same: the revocation
// is written, and nothing else.
func (a *Admin) DeleteUser(ctx context.Context, userID string) (*Deletion, error) {
	d, err := a.deleteUser(ctx, userID)
	detail := []any{}
	if d != nil {
		detail = append(detail, "objects", d.DeletedObjects, "items", d.DeletedItems)
	}
	a.Audit.Record(ctx, "delete-user", userID, err, detail...)
	return d, err
}

func (a *Admin) deleteUser(ctx context.Context, userID string) (*Deletion, error) {
	d, err := a.PlanDeletion(ctx, userID)
	if err != nil {
		return nil, err
	}
	d.DryRun = false
	if d.State == string(state.Purging) {
		sb, err := a.Store.Get(ctx, userID)
		if err == nil && !sb.StalePurge(a.now()) {
			return d, fmt.Errorf("%s: %w until %s; run delete-user again after that to finish", userID, ErrMidPurge,
				sb.LeaseDeadline.UTC().Format(time.RFC3339))
		}
	}
	rev, err := a.revoke(ctx, userID)
	if err != nil {
		return d, err
	}
	d.NotBefore = &rev.NotBefore
	if d.State != "" && d.State != string(state.Purging) {
		if _, err := a.stop(ctx, userID, true, "sandgate admin: user deleted"); err != nil && !errors.Is(err, ErrUnknownUser) {
			return d, fmt.Errorf("delete %s: %w", userID, err)
		}
	}
	lease, err := a.Store.AcquirePurge(ctx, userID)
	if err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	// From here the lock refuses every start; BeginPurge makes it unreleasable, so a
	// failure below is finished by the next run, never handed back half deleted.
	if err := a.Store.BeginPurge(ctx, lease); err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	prefix, err := objsync.UserPrefix(userID)
	if err != nil {
		return d, err
	}
	n, err := objsync.DeletePrefix(ctx, a.Bucket, prefix)
	d.DeletedObjects = n
	if err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	// Before the items: a failure here leaves the purge lock, and a rerun finishes.
	d.DeletedBackups, err = a.deleteBackups(ctx, userID)
	if err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	deleted, err := a.Store.EraseUserItems(ctx, lease)
	d.DeletedItems = len(deleted)
	if err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	if err := a.Store.FinishPurge(ctx, lease); err != nil {
		return d, fmt.Errorf("delete %s: %w", userID, err)
	}
	if d.State != "" {
		d.DeletedItems++ // the record
	}
	d.Kept = "ACCESS#" + userID + " / ACCESS: " + state.ErasedAccess
	return d, nil
}

// Reconciliation is what Reconcile found and did.
type Reconciliation struct {
	cleanup.Reconciliation
	// Unnamed are the running sandbox tasks that no live lease names (not pool tasks):
	// reported, not stopped — the cleanup pass stops such a task once it is older than
	// its grace (2 minutes), so a launch whose record is not written yet is not hit.
	Unnamed []string `json:"unnamed"`
}

// Reconcile runs the cleanup pass's repair of the capacity counter (cleanup.Reconcile:
// slots of tasks whose stop event was lost given back, the counter recounted from the
// records and corrected): the same code, on demand. It also reports ECS's running
// sandbox tasks that no live lease names.
func (a *Admin) Reconcile(ctx context.Context) (Reconciliation, error) {
	r, err := a.reconcile(ctx)
	a.Audit.Record(ctx, "reconcile", "", err, "counter", r.Counter.Counter, "held", r.Counter.Held,
		"corrected", r.Counter.Corrected, "moved", r.Counter.Moved, "slotsReturned", r.SlotsReturned, "unnamed", len(r.Unnamed))
	return r, err
}

func (a *Admin) reconcile(ctx context.Context) (Reconciliation, error) {
	cr, err := a.Cleaner.Reconcile(ctx)
	r := Reconciliation{Reconciliation: cr, Unnamed: []string{}}
	if err != nil {
		return r, err
	}
	tasks, err := a.Tasks.List(ctx)
	if err != nil {
		return r, fmt.Errorf("reconcile: %w", err)
	}
	now := a.now()
	for _, t := range tasks {
		if t.Stopped() || t.PoolID != "" {
			continue
		}
		if t.UserID != "" {
			sb, err := a.Store.Get(ctx, t.UserID)
			if err != nil && !errors.Is(err, state.ErrNotFound) {
				return r, fmt.Errorf("reconcile: %w", err)
			}
			if sb.Live(now) && (sb.TaskARN == t.ARN || sb.TaskARN == "") {
				continue
			}
		}
		r.Unnamed = append(r.Unnamed, t.ARN)
	}
	return r, nil
}
