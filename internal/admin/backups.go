package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
)

// DefaultBackupLockWait bounds delete-user's wait for the backups area's lock, which a
// cleanup pass holds for its backup step (at most its 5-minute run).
const DefaultBackupLockWait = 6 * time.Minute

// BackupRow is one of a user's backups.
type BackupRow struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Files   int       `json:"files"`
	Bytes   int64     `json:"bytes"`
	// Generation and SyncedAt are the captured sync's (the marker's); zero for a
	// backup taken under the user's lock without a marker.
	Generation int64     `json:"generation"`
	SyncedAt   time.Time `json:"syncedAt"`
	Reason     string    `json:"reason,omitempty"`
	// Problem says why the manifest could not be read; the backup cannot be restored.
	Problem string `json:"problem,omitempty"`
}

// ListBackups returns the user's backups, oldest first, each manifest read.
func (a *Admin) ListBackups(ctx context.Context, userID string) ([]BackupRow, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	refs, err := backup.List(ctx, a.Bucket, userID)
	if err != nil {
		return nil, err
	}
	rows := make([]BackupRow, 0, len(refs))
	for _, r := range refs {
		row := BackupRow{ID: r.ID, Created: r.Time}
		m, err := backup.Load(ctx, a.Bucket, r)
		switch {
		case errors.Is(err, backup.ErrCorrupt):
			row.Problem = err.Error()
		case err != nil:
			return rows, err
		default:
			row.Files, row.Bytes, row.Reason = m.Files, m.Bytes, m.Reason
			row.Generation, row.SyncedAt = m.Marker.Generation, m.Marker.Time
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// Restored is what RestoreBackup did.
type Restored struct {
	UserID string `json:"userId"`
	// Backup is the backup restored; Undo the backup of the prefix as it was just
	// before, which a restore from it undoes this one.
	Backup string `json:"backup"`
	Undo   string `json:"undo"`
	// Stopped says what was done to a running sandbox first.
	Stopped string `json:"stopped,omitempty"`
	backup.Changes
}

// RestoreBackup replaces the user's prefix with one of their backups: from is its id
// (list-backups) or a time, which picks the newest backup made at or before it.
//
// The backup is read and verified first (every content present, its size and
// SHA-256 as the manifest says): a missing or corrupt one is refused with nothing
// changed, the sandbox left running. Then a running sandbox is stopped (its final
// sync), the user's start lease taken and held STOPPING with no task (a connect or a
// frame meanwhile hears `stopping`, its frames queued, and is served by the sandbox
// its restart starts once the restore ends) and the backups area's lock; the prefix as it is now is backed up (Restored.Undo), then
// restored (backup.Restore: the marker written last), all within the lease's term
// (state.StartTTL, 5 minutes); the lease is released and the lock given back.
func (a *Admin) RestoreBackup(ctx context.Context, userID, from string) (*Restored, error) {
	res, err := a.restoreBackup(ctx, userID, from)
	var detail []any
	if res != nil {
		detail = append(detail, "backup", res.Backup, "undo", res.Undo, "added", len(res.Added),
			"replaced", len(res.Replaced), "deleted", len(res.Deleted), "unchanged", res.Unchanged)
	}
	a.Audit.Record(ctx, "restore-backup", userID, err, detail...)
	return res, err
}

func (a *Admin) restoreBackup(ctx context.Context, userID, from string) (res *Restored, err error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	store, ok := a.Bucket.(backup.Store)
	if !ok {
		return nil, errors.New("restore-backup: this bucket client cannot copy server-side")
	}
	ref, err := backup.Find(ctx, store, userID, from)
	if err != nil {
		return nil, err
	}
	m, err := backup.Load(ctx, store, ref)
	if err == nil {
		err = backup.Verify(ctx, store, m)
	}
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was changed", err)
	}
	res = &Restored{UserID: userID, Backup: m.ID}

	stopped, err := a.stop(ctx, userID, true, "sandgate admin: restore-backup")
	switch {
	case errors.Is(err, ErrUnknownUser): // no record: nothing runs
	case err != nil:
		return res, fmt.Errorf("restore %s: %w", userID, err)
	default:
		res.Stopped = stopped.Action
	}
	// The user's own start lease, with no task, held STOPPING: no sandbox can write the
	// prefix, and a connect or a frame meanwhile is treated as during any stop — told
	// `stopping`, its frames queued, a restart waiting (notice.DefaultRestartWait) for
	// the record to stop, then starting a sandbox on the restored files. A restore that
	// dies leaves a lease that cleanup reaps after StartTTL — never a PURGING lock,
	// which a later pass would resume as a purge.
	lease, err := a.Store.Acquire(ctx, userID)
	if err != nil {
		return res, fmt.Errorf("restore %s: hold the user's lease: %w", userID, err)
	}
	defer func() {
		if rerr := a.Store.Release(context.WithoutCancel(ctx), lease, "sandgate admin: restore-backup"); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore %s: release the user's lease: %w", userID, rerr))
		}
	}()
	if err := a.Store.MarkStopping(ctx, lease); err != nil {
		return res, fmt.Errorf("restore %s: hold the user's lease: %w; nothing was changed", userID, err)
	}
	// Every write happens within the lease's term (the lock's Check stops 30 s before).
	term := lease.Deadline.Sub(a.now())
	l, err := backup.AcquireWait(ctx, store, "admin restore-backup "+userID, term, term-2*time.Minute, orDefault(a.Poll, DefaultPoll), a.Now)
	if err != nil {
		return res, fmt.Errorf("restore %s: %w; nothing was changed, try again", userID, err)
	}
	defer func() {
		if rerr := l.Release(ctx); rerr != nil {
			a.log().Warn("backups lock not released; it lapses at its term", "error", rerr.Error())
		}
	}()
	b := &backup.Backer{Store: store, Log: a.log(), Now: a.Now}
	undo, err := b.Backup(ctx, l, userID, backup.Options{Locked: true, Reason: "before restore-backup to " + m.ID})
	if err != nil {
		return res, fmt.Errorf("restore %s: back up the prefix as it is first: %w; nothing was changed", userID, err)
	}
	res.Undo = undo.ID
	res.Changes, err = backup.Restore(ctx, store, l, m, lease.Generation, a.now())
	if err != nil {
		return res, fmt.Errorf("%w (run restore-backup again to finish it, or restore %s to undo it)", err, undo.ID)
	}
	return res, nil
}

// deleteBackups deletes the user's backups and then the contents no other backup
// names, under the backups area's lock.
func (a *Admin) deleteBackups(ctx context.Context, userID string) (int, error) {
	l, err := backup.AcquireWait(ctx, a.Bucket, "admin delete-user "+userID, 0, DefaultBackupLockWait, orDefault(a.Poll, DefaultPoll), a.Now)
	if err != nil {
		return 0, fmt.Errorf("delete backups of %s: %w", userID, err)
	}
	defer func() {
		if rerr := l.Release(ctx); rerr != nil {
			a.log().Warn("backups lock not released; it lapses at its term", "error", rerr.Error())
		}
	}()
	// Everything unreferenced goes, however new: no backup runs beside this one.
	n, sw, err := backup.DeleteUser(ctx, a.Bucket, l, userID, a.now().Add(time.Hour))
	if err != nil {
		return n, fmt.Errorf("delete backups of %s: %w", userID, err)
	}
	return n + sw.Deleted, nil
}
