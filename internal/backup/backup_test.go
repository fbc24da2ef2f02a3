package backup_test

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/objsync"
)

const user = "user_alice"

var notes = map[string]string{
	"notes/monday.md":  "buy milk",
	"notes/tuesday.md": "call bob about the roof",
	"src/main.go":      "package main\n",
	"copy-of-main.go":  "package main\n", // same content: stored once
}

func TestPass_Run_BacksUpRestoresAndCostsNothingUnchanged(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	w := newWorkspace(t, e.bucket, user)
	w.write(notes)
	w.sync()
	p := e.pass(backup.Retention{})

	sum, err := p.Run(ctx, []string{user})
	if err != nil || sum.BackedUp != 1 || sum.Copied != 3 || sum.Errors != 0 {
		t.Fatalf("first pass: %+v, %v; want 1 backed up, 3 contents copied (4 files, 2 alike)", sum, err)
	}
	refs, err := backup.List(ctx, e.bucket, user)
	if err != nil || len(refs) != 1 {
		t.Fatalf("backups: %v, %v", refs, err)
	}
	first := refs[0]

	// Nothing synced since: the pass only reads the marker and lists the manifests.
	e.clock.Advance(time.Minute)
	copies := e.copies.Load()
	sum, err = p.Run(ctx, []string{user})
	if err != nil || sum.Unchanged != 1 || sum.BackedUp != 0 || e.copies.Load() != copies {
		t.Fatalf("unchanged pass: %+v, %v, copies %d → %d", sum, err, copies, e.copies.Load())
	}

	// One file changed: one copy.
	w.write(map[string]string{"notes/monday.md": "buy milk and eggs"})
	w.sync()
	e.clock.Advance(time.Minute)
	sum, err = p.Run(ctx, []string{user})
	if err != nil || sum.BackedUp != 1 || sum.Copied != 1 {
		t.Fatalf("pass after one change: %+v, %v; want 1 copy", sum, err)
	}

	// The workload deletes the notes; the sync deletes them from the prefix.
	w.remove("notes/monday.md", "notes/tuesday.md")
	w.sync()
	if got := restored(t, e.bucket, user); len(got) != 2 {
		t.Fatalf("after the deletion the prefix holds %v", got)
	}

	m, err := backup.Load(ctx, e.bucket, first)
	if err != nil {
		t.Fatal(err)
	}
	l, err := backup.Acquire(ctx, e.bucket, "restore", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := backup.Restore(ctx, e.bucket, l, m, 7, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The sync left notes/ as an empty directory's placeholder, which the backup has not.
	if want := []string{"notes/monday.md", "notes/tuesday.md"}; !reflect.DeepEqual(ch.Added, want) || len(ch.Replaced) != 0 ||
		!reflect.DeepEqual(ch.Deleted, []string{"notes"}) || ch.Unchanged != 2 {
		t.Fatalf("changes: %+v; want the two notes added, the empty notes/ deleted, two unchanged", ch)
	}
	if got := restored(t, e.bucket, user); !maps.Equal(got, notes) {
		t.Fatalf("restored workspace: %v\nwant %v", got, notes)
	}
}

func TestPass_Run_SameContentOfTwoUsersStoredOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for _, u := range []string{"user_a", "user_b"} {
		w := newWorkspace(t, e.bucket, u)
		w.write(map[string]string{"big.bin": strings.Repeat("x", 1<<20), u + ".txt": u})
		w.sync()
	}
	sum, err := e.pass(backup.Retention{}).Run(ctx, []string{"user_a", "user_b"})
	if err != nil || sum.BackedUp != 2 || sum.Copied != 3 || sum.CopiedBytes != 1<<20+12 {
		t.Fatalf("pass: %+v, %v; want the shared MiB copied once", sum, err)
	}
	if n := len(keys(t, e.bucket, backup.ObjectsDir)); n != 3 {
		t.Fatalf("%d contents stored, want 3", n)
	}
}

func TestBacker_Backup_OnlyAFinishedSync(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	b := &backup.Backer{Store: e.bucket, Now: e.clock.Now}
	l, err := backup.Acquire(ctx, e.bucket, "test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(ctx, l, user, backup.Options{}); !errors.Is(err, backup.ErrNoMarker) {
		t.Fatalf("no sync yet: %v, want ErrNoMarker", err)
	}
	w := newWorkspace(t, e.bucket, user)
	w.write(notes)
	w.sync()
	prefix, _ := objsync.UserPrefix(user)

	// A sync in progress: one file written after the marker, which is not yet.
	time.Sleep(1100 * time.Millisecond) // S3's dates have a one-second grain
	key, meta, err := objsync.FileObject(prefix, "notes/wednesday.md", 0o644, time.Now(), strings.Repeat("ab", 32), 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: key, Body: strings.NewReader("x"), Size: 1, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(ctx, l, user, backup.Options{}); !errors.Is(err, backup.ErrChanged) {
		t.Fatalf("object newer than the marker: %v, want ErrChanged", err)
	}
	// A sync that has deleted a file and not yet written its marker.
	if err := e.bucket.Delete(ctx, []string{key, prefix + objsync.FilesDir + "notes/monday.md"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(ctx, l, user, backup.Options{}); !errors.Is(err, backup.ErrChanged) {
		t.Fatalf("a file fewer than the marker says: %v, want ErrChanged", err)
	}
	if got := keys(t, e.bucket, backup.ManifestsDir); len(got) != 0 {
		t.Fatalf("manifests written: %v", got)
	}
	// The sync finishes: the backup goes through.
	w.remove("notes/monday.md")
	w.sync()
	if res, err := b.Backup(ctx, l, user, backup.Options{}); err != nil || res.Files != 3 {
		t.Fatalf("after the sync finished: %+v, %v", res, err)
	}
}

func TestPass_Run_S3FailingMidBackupLeavesNoManifestAndResumes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	w := newWorkspace(t, e.bucket, user)
	files := map[string]string{}
	for i := range 10 {
		files["f"+string(rune('a'+i))+".txt"] = strings.Repeat(string(rune('a'+i)), i+1)
	}
	w.write(files)
	w.sync()
	e.failAfter.Store(4)
	p := e.pass(backup.Retention{})
	sum, err := p.Run(ctx, []string{user})
	if err != nil || sum.Errors != 1 || sum.BackedUp != 0 {
		t.Fatalf("failing pass: %+v, %v; want the user's backup failed", sum, err)
	}
	if got := keys(t, e.bucket, backup.ManifestsDir); len(got) != 0 {
		t.Fatalf("a manifest was written by a failed backup: %v", got)
	}
	stored := len(keys(t, e.bucket, backup.ObjectsDir))
	if stored != 4 {
		t.Fatalf("%d contents stored before the fault, want 4", stored)
	}
	// A manifest the fault left out cannot be restored from.
	if _, err := backup.Find(ctx, e.bucket, user, e.clock.Now().Add(time.Hour).Format(time.RFC3339)); !errors.Is(err, backup.ErrNotFound) {
		t.Fatalf("find after a failed backup: %v, want ErrNotFound", err)
	}

	e.srv.Faults.Clear()
	e.failAfter.Store(0)
	// The fault also failed the lock's release: the next pass waits for its term.
	if sum, err := p.Run(ctx, []string{user}); err != nil || !sum.Busy {
		t.Fatalf("pass within the failed one's lock term: %+v, %v; want busy", sum, err)
	}
	e.clock.Advance(backup.DefaultLockTerm)
	sum, err = p.Run(ctx, []string{user})
	if err != nil || sum.BackedUp != 1 || sum.Copied != 10-stored {
		t.Fatalf("resumed pass: %+v, %v; want the %d contents left copied, none twice", sum, err, 10-stored)
	}
	refs, _ := backup.List(ctx, e.bucket, user)
	m, err := backup.Load(ctx, e.bucket, refs[0])
	if err != nil || m.Files != 10 {
		t.Fatalf("manifest: %v files, %v", m, err)
	}
	if err := backup.Verify(ctx, e.bucket, m); err != nil {
		t.Fatal(err)
	}
}

func TestPass_Run_RetentionExpiresAndSweepsOnlyUnreferenced(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	w := newWorkspace(t, e.bucket, user)
	p := e.pass(backup.Retention{Keep: 2, MaxAge: 24 * time.Hour})
	p.SweepGrace = time.Second // the clock runs minutes ahead of the store's dates
	for i, body := range []string{"v1", "v22", "v333"} {
		w.write(map[string]string{"kept.txt": "the same in every backup", "changing.txt": body})
		w.sync()
		e.clock.Advance(time.Minute)
		sum, err := p.Run(ctx, []string{user})
		if err != nil || sum.BackedUp != 1 {
			t.Fatalf("pass %d: %+v, %v", i, sum, err)
		}
		if i == 2 && (sum.Expired != 1 || sum.Swept != 1) {
			t.Fatalf("third pass: %+v; want the oldest backup expired and its one own content swept", sum)
		}
	}
	refs, _ := backup.List(ctx, e.bucket, user)
	if len(refs) != 2 {
		t.Fatalf("%d backups kept, want 2", len(refs))
	}
	for _, r := range refs {
		m, err := backup.Load(ctx, e.bucket, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := backup.Verify(ctx, e.bucket, m); err != nil {
			t.Fatalf("a kept backup lost content: %v", err)
		}
	}
	// A day later the age limit expires all but the newest.
	w.write(map[string]string{"changing.txt": "v4444"})
	w.sync()
	e.clock.Advance(25 * time.Hour)
	sum, err := p.Run(ctx, []string{user})
	if err != nil || sum.Expired != 2 {
		t.Fatalf("a day later: %+v, %v; want both older backups expired", sum, err)
	}
	if refs, _ := backup.List(ctx, e.bucket, user); len(refs) != 1 {
		t.Fatalf("%d backups kept, want the newest only", len(refs))
	}
	if n := len(keys(t, e.bucket, backup.ObjectsDir)); n != 2 {
		t.Fatalf("%d contents stored, want 2 (kept.txt, changing.txt v4444)", n)
	}
}

func TestRestore_RefusesMissingOrCorruptBackupChangingNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	w := newWorkspace(t, e.bucket, user)
	w.write(notes)
	w.sync()
	if _, err := e.pass(backup.Retention{}).Run(ctx, []string{user}); err != nil {
		t.Fatal(err)
	}
	w.remove("notes/monday.md")
	w.sync()
	prefix, _ := objsync.UserPrefix(user)
	before := keys(t, e.bucket, prefix)
	refs, _ := backup.List(ctx, e.bucket, user)
	m, err := backup.Load(ctx, e.bucket, refs[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := backup.Acquire(ctx, e.bucket, "test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum string
	for _, en := range m.Entries {
		if en.Path == "notes/tuesday.md" {
			sum = en.SHA256
		}
	}
	// A content replaced by other bytes (and so another size and hash).
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: backup.ObjectKey(sum), Body: strings.NewReader("tampered"), Size: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, e.bucket, l, m, 1, e.clock.Now()); !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), "notes/tuesday.md") {
		t.Fatalf("corrupt content: %v, want ErrCorrupt naming the path", err)
	}
	// A content gone.
	if err := e.bucket.Delete(ctx, []string{backup.ObjectKey(sum)}); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, e.bucket, l, m, 1, e.clock.Now()); !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing content: %v, want ErrCorrupt saying it is missing", err)
	}
	if after := keys(t, e.bucket, prefix); !slices.Equal(before, after) {
		t.Fatalf("a refused restore changed the prefix:\n%v\n%v", before, after)
	}
	// A manifest that is not one.
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: refs[0].Key, Body: strings.NewReader("{not json"), Size: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Load(ctx, e.bucket, refs[0]); !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("corrupt manifest: %v, want ErrCorrupt", err)
	}
	if _, err := backup.Find(ctx, e.bucket, user, "20200101T000000.000Z"); !errors.Is(err, backup.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestAcquire_OneWriterAtATime(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	l, err := backup.Acquire(ctx, e.bucket, "first", time.Hour, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	var busy *backup.BusyError
	if _, err := backup.Acquire(ctx, e.bucket, "second", time.Hour, e.clock.Now); !errors.As(err, &busy) || busy.Holder != "first" {
		t.Fatalf("second writer: %v, want BusyError naming first", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2, err := backup.Acquire(ctx, e.bucket, "second", time.Hour, e.clock.Now)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	// A holder that died: its term runs out and the next writer takes over; the dead
	// one's writes are refused by its own check.
	e.clock.Advance(2 * time.Hour)
	if err := l2.Check(); !errors.Is(err, backup.ErrLockLost) {
		t.Fatalf("check past the term: %v", err)
	}
	if _, err := backup.Acquire(ctx, e.bucket, "third", time.Hour, e.clock.Now); err != nil {
		t.Fatalf("expired lock not taken over: %v", err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatalf("late release: %v", err)
	}
	if _, err := backup.Acquire(ctx, e.bucket, "fourth", time.Hour, e.clock.Now); !errors.Is(err, backup.ErrBusy) {
		t.Fatalf("a late release freed the new holder's lock: %v", err)
	}
}

func TestRetention_Expired(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var refs []backup.Ref
	for i := 5; i >= 0; i-- {
		refs = append(refs, backup.Ref{ID: "x", Time: now.Add(-time.Duration(i) * 24 * time.Hour)})
	}
	if got := (backup.Retention{Keep: 3, MaxAge: 30 * 24 * time.Hour}).Expired(refs, now); len(got) != 3 {
		t.Fatalf("keep 3 of 6: expired %d", len(got))
	}
	if got := (backup.Retention{Keep: 10, MaxAge: 36 * time.Hour}).Expired(refs, now); len(got) != 4 {
		t.Fatalf("max age 36h: expired %d, want the 4 older than 36 h", len(got))
	}
	if got := (backup.Retention{Keep: 10, MaxAge: time.Hour}).Expired(refs[:1], now.Add(1000*time.Hour)); len(got) != 0 {
		t.Fatalf("the newest expired: %v", got)
	}
}

// An object no sync wrote (no sha256 in its metadata) keeps its user out of the
// backups, counted and logged, not an error of the pass.
func TestPass_Run_ObjectWithoutHashCountedNotFailed(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	w := newWorkspace(t, e.bucket, user)
	w.write(notes)
	w.sync()
	prefix, _ := objsync.UserPrefix(user)
	// Written by another tool, and counted by a marker written after it.
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: prefix + objsync.FilesDir + "imported.txt", Body: strings.NewReader("from elsewhere"), Size: 14}); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, body := range notes {
		total += int64(len(body))
	}
	mkey, mbody, mmeta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 1, Time: time.Now(), Files: len(notes) + 1, Bytes: total + 14})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: mkey, Body: strings.NewReader(string(mbody)), Size: int64(len(mbody)), Meta: mmeta}); err != nil {
		t.Fatal(err)
	}
	sum, err := e.pass(backup.Retention{}).Run(ctx, []string{user})
	if err != nil || sum.Unhashed != 1 || sum.Errors != 0 || sum.BackedUp != 0 {
		t.Fatalf("pass: %+v, %v; want the user counted unhashed", sum, err)
	}
}
