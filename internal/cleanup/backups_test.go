package cleanup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// synced writes n files under user's prefix and then the marker, as a finished sync
// leaves them.
func (e *env) synced(t *testing.T, user string, n int) {
	t.Helper()
	ctx := context.Background()
	prefix, _ := objsync.UserPrefix(user)
	var size int64
	for i := range n {
		body := []byte(fmt.Sprintf("file %d of %s", i, user))
		sum := sha256.Sum256(body)
		key, meta, err := objsync.FileObject(prefix, fmt.Sprintf("f%d.txt", i), 0o644, time.Now(), hex.EncodeToString(sum[:]), 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta}); err != nil {
			t.Fatal(err)
		}
		size += int64(len(body))
	}
	key, body, meta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 1, Time: time.Now(), Files: n, Bytes: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta}); err != nil {
		t.Fatal(err)
	}
}

// The pass's last step backs up each user whose marker changed, and forgets the
// backups of the users it purged.
func TestCleaner_Run_BacksUpChangedPrefixesForgetsPurged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.c.Backups = &backup.Pass{Backer: backup.Backer{Store: e.bucket, Log: e.c.Log, Now: e.db.Clock.Now}, Holder: "test"}
	e.stopped(t, "user_old")
	e.synced(t, "user_old", 3)
	e.stopped(t, "user_new")
	e.synced(t, "user_new", 2)

	sum := e.run(t)
	if b := sum.Backups; b == nil || b.BackedUp != 2 || b.Copied != 5 || sum.Errors != 0 {
		t.Fatalf("first pass: %+v, backups %+v", sum, sum.Backups)
	}
	e.db.Clock.Advance(time.Minute)
	if sum = e.run(t); sum.Backups.Unchanged != 2 || sum.Backups.Copied != 0 {
		t.Fatalf("second pass: backups %+v; want both unchanged", sum.Backups)
	}

	e.db.Clock.Advance(91 * day)
	e.stopped(t, "user_new") // active again
	sum = e.run(t)
	if sum.Purged != 1 || sum.Backups.Forgotten != 1 || sum.Backups.Swept != 3 || sum.Backups.Users != 1 || sum.Errors != 0 {
		t.Fatalf("purging pass: %+v, backups %+v; want user_old's backup and its 3 contents gone", sum, sum.Backups)
	}
	if refs, err := backup.List(ctx, e.bucket, "user_old"); err != nil || len(refs) != 0 {
		t.Fatalf("purged user's backups: %v, %v", refs, err)
	}
	if refs, err := backup.List(ctx, e.bucket, "user_new"); err != nil || len(refs) != 1 {
		t.Fatalf("kept user's backups: %v, %v", refs, err)
	}
	// A user idle past BackupLookback is not looked at: no request for them (what
	// remains is the pass's lock and its daily sweep).
	e.db.Clock.Advance(cleanup.BackupLookback + time.Minute)
	if sum = e.run(t); sum.Backups.Users != 0 {
		t.Fatalf("idle pass: backups %+v; want no user considered", sum.Backups)
	}
}

// A restore-backup that died (the operator's process killed) leaves the user's start
// lease it held, with no task: the next pass reaps it and the user's data stays —
// unlike a PURGING lock, which a pass would resume as a purge.
func TestCleaner_Run_DeadRestoreLeaseReapedDataKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_restoring")
	e.synced(t, "user_restoring", 3)
	if _, err := e.store.Acquire(ctx, "user_restoring"); err != nil { // what restore-backup holds
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL + time.Minute)
	sum := e.run(t)
	if sum.Reaped != 1 || sum.Purged != 0 {
		t.Fatalf("summary %+v; want the dead restore's lease reaped, nothing purged", sum)
	}
	if n := e.keys(t, "user_restoring"); n != 4 { // 3 files and the marker
		t.Fatalf("%d objects left of 4", n)
	}
	if sb, err := e.store.Get(ctx, "user_restoring"); err != nil || sb.State != state.Stopped {
		t.Fatalf("record %+v, %v", sb, err)
	}
}
