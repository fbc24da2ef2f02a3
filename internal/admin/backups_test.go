package admin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// syncDir syncs files into user's prefix through objsync, as an agent does, from a
// fresh workspace restored first; it returns the workspace's regular files after.
func syncDir(t *testing.T, b objsync.Bucket, user string, write map[string]string, remove ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	prefix, _ := objsync.UserPrefix(user)
	dir := filepath.Join(root, "ws")
	s, err := objsync.New(b, prefix, dir, filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	for rel, body := range write {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range remove {
		if err := os.Remove(filepath.Join(dir, rel)); err != nil {
			t.Fatal(err)
		}
	}
	if len(write)+len(remove) > 0 {
		if _, err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			data, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			got[filepath.ToSlash(rel)] = string(data)
		}
		return err
	})
	return got
}

// restore-backup: the workload's deleted notes come back; the state before the
// restore is kept as a backup, and restoring that one undoes it. A corrupt backup is
// refused with nothing changed; delete-user removes the backups too.
func TestAdmin_RestoreBackup_BringsBackUndoesRefusesCorrupt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const user = "user_notes"
	l, err := e.store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.TaskStopped(ctx, state.TaskRef{UserID: user, Generation: l.Generation}, "test"); err != nil {
		t.Fatal(err)
	}
	notes := map[string]string{"notes/a.md": "first note", "notes/b.md": "second note", "keep.txt": "kept"}
	syncDir(t, e.bucket, user, notes)
	pass := &backup.Pass{Backer: backup.Backer{Store: e.bucket, Now: e.a.Now}, Holder: "test"}
	if sum, err := pass.Run(ctx, []string{user}); err != nil || sum.BackedUp != 1 {
		t.Fatalf("backup: %+v, %v", sum, err)
	}
	rows, err := e.a.ListBackups(ctx, user)
	if err != nil || len(rows) != 1 || rows[0].Files != 3 || rows[0].Reason != "scheduled" {
		t.Fatalf("list-backups: %+v, %v", rows, err)
	}
	first := rows[0].ID
	syncDir(t, e.bucket, user, nil, "notes/a.md", "notes/b.md")

	if _, err := e.a.RestoreBackup(ctx, user, "20200101T000000.000Z"); !errors.Is(err, backup.ErrNotFound) {
		t.Fatalf("unknown backup: %v", err)
	}
	e.db.Clock.Advance(time.Minute)
	res, err := e.a.RestoreBackup(ctx, user, e.db.Clock.Now().Format(time.RFC3339)) // the newest at or before now
	if err != nil {
		t.Fatal(err)
	}
	if res.Backup != first || !slices.Equal(res.Added, []string{"notes/a.md", "notes/b.md"}) || res.Unchanged != 1 || res.Undo == "" {
		t.Fatalf("restore: %+v", res)
	}
	if got := syncDir(t, e.bucket, user, nil); len(got) != 3 || got["notes/a.md"] != "first note" {
		t.Fatalf("after restore a sandbox restores %v", got)
	}
	sb, err := e.store.Get(ctx, user)
	if err != nil || sb.State != state.Stopped {
		t.Fatalf("record after restore: %+v, %v; want STOPPED (the lock released)", sb, err)
	}
	// The restore's own backup undoes it.
	e.db.Clock.Advance(time.Minute)
	undo, err := e.a.RestoreBackup(ctx, user, res.Undo)
	if err != nil || !slices.Equal(undo.Deleted, []string{"notes/a.md", "notes/b.md"}) {
		t.Fatalf("undo: %+v, %v", undo, err)
	}

	// A content gone from the backups: refused before anything changes.
	m, err := backup.Load(ctx, e.bucket, mustFind(t, e, user, first))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range m.Entries {
		if en.Path == "notes/a.md" {
			if err := e.bucket.Delete(ctx, []string{backup.ObjectKey(en.SHA256)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	prefix, _ := objsync.UserPrefix(user)
	before := keys(t, e.bucket, prefix)
	e.db.Clock.Advance(time.Minute)
	_, err = e.a.RestoreBackup(ctx, user, first)
	if !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), "notes/a.md") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("corrupt backup: %v", err)
	}
	if after := keys(t, e.bucket, prefix); !slices.Equal(before, after) {
		t.Fatalf("a refused restore changed the prefix: %v → %v", before, after)
	}
	if !strings.Contains(e.audit.String(), `"restore-backup"`) {
		t.Errorf("no audit line:\n%s", e.audit)
	}

	// delete-user: the backups go too, manifests and contents.
	if _, err := e.a.DeleteUser(ctx, user); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, e.bucket, backup.Root); !slices.Equal(got, []string{backup.LockKey, backup.SweptKey}) { // bookkeeping only
		t.Fatalf("left in the backups area: %v", got)
	}
}

func mustFind(t *testing.T, e *env, user, id string) backup.Ref {
	t.Helper()
	ref, err := backup.Find(context.Background(), e.bucket, user, id)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
