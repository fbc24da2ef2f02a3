package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Backups end to end, on a stack of its own (a cleanup pass reads every record): a
// user saves notes through the demo workload, a Cleanup pass with S3 failing leaves
// no manifest, the next one backs the synced prefix up, the sandbox's own credentials cannot read, overwrite or delete
// that backup, the workload deletes the notes (and the sync deletes them from the
// prefix), the operator's restore-backup brings them back, and the next sandbox lists
// them again.
func TestBackup_SaveForgetRestore_ListsTheNotesAgain(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Overrides["SYNC_INTERVAL"] = "1s"
		noIdleStop(o)
	})
	ctx := context.Background()
	user := "user_backup" + randomHex(4)
	c := s.DialReady(t, user, coldStart)
	for _, n := range []string{"/note the first note", "/note the second note"} {
		c.Send(n)
		c.Next(reply, "saved", func(f string) bool { return strings.Contains(f, `"note.saved"`) })
	}
	s.NotesSynced(t, user, 2, reply)
	synced := func(files int) {
		t.Helper()
		testkit.Eventually(t, reply, func() bool { m := s.Marker(t, user); return m != nil && m.Files == files },
			func() string { return fmt.Sprintf("the marker never counted %d files", files) })
	}
	synced(2)

	// S3 failing mid-backup (every HEAD after the lock, the marker and the listing, on
	// every retry): the pass's backup of the user fails and leaves no manifest.
	if err := s.S3.Faults.Inject(s3local.Fault{Method: http.MethodHead, Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	sum := invokeCleanup(t, s, "CleanupFunction")
	s.S3.Faults.Clear()
	if b := sum.Backups; b == nil || b.Errors != 1 || b.BackedUp != 0 || s.S3.Faults.Injected() == 0 {
		t.Fatalf("cleanup with S3 failing: %+v, backups %+v; want the user's backup failed", sum, sum.Backups)
	}
	if keys := s.Keys(t, backup.ManifestsDir); len(keys) != 0 {
		t.Fatalf("a failed backup left manifests: %v", keys)
	}

	// The scheduled pass, as the Cleanup function runs it under its role.
	sum = invokeCleanup(t, s, "CleanupFunction")
	if b := sum.Backups; b == nil || b.BackedUp != 1 || b.Errors != 0 || b.Copied != 2 {
		t.Fatalf("cleanup: %+v, backups %+v; want the user's two notes backed up", sum, sum.Backups)
	}
	refs, err := backup.List(ctx, s.Objects(), user)
	if err != nil || len(refs) != 1 {
		t.Fatalf("backups: %v, %v", refs, err)
	}
	m, err := backup.Load(ctx, s.Objects(), refs[0])
	if err != nil {
		t.Fatal(err)
	}
	// A second pass: nothing synced since, nothing copied.
	if sum := invokeCleanup(t, s, "CleanupFunction"); sum.Backups.Unchanged != 1 || sum.Backups.Copied != 0 {
		t.Fatalf("second pass: backups %+v; want unchanged", sum.Backups)
	}

	// Every credential the sandbox can obtain: its vended session (what the agent
	// holds; the workload holds none, TestHostile_*) and its task role.
	rec := s.Running(t, user, reply)
	taskID := rec.TaskARN[strings.LastIndex(rec.TaskARN, "/")+1:]
	attackBackups(t, s, user, m, map[string]aws.Config{
		"the sandbox's vended session": s.SandboxSession(t, user, taskID),
		"the task role":                s.TaskRoleSession(t, taskID),
	})

	// The workload deletes the notes and writes another (the sync never empties a
	// prefix from an empty workspace); the sync deletes them from the prefix.
	c.Send("/forget")
	c.Next(reply, "forgotten", func(f string) bool { return strings.Contains(f, `"notes.forgotten","count":2`) })
	c.Send("/note written after the loss")
	c.Next(reply, "saved", func(f string) bool { return strings.Contains(f, `"note.saved"`) })
	synced(1)

	// The operator's command, as make admin runs it.
	out, _ := mustAdmin(t, s, "list-backups", user)
	t.Logf("list-backups:\n%s", out)
	if _, errOut, code := admin(t, s, "", "restore-backup", "--from", "2020-01-01T00:00:00Z", "-yes", user); code != 1 || !strings.Contains(errOut, "no backup made at or before") {
		t.Fatalf("restore-backup of a time before any backup: exit %d, %s", code, errOut)
	}
	out, errOut := mustAdmin(t, s, "restore-backup", "--from", refs[0].ID, "-yes", "-json", user)
	auditLine(t, errOut, "restore-backup", user)
	var res ops.Restored
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("restore-backup -json: %v\n%s", err, out)
	}
	var notes []string
	for _, e := range m.Entries {
		if strings.HasPrefix(e.Path, "notes/") && e.Type == "file" {
			notes = append(notes, e.Path)
		}
	}
	changed := slices.Sorted(slices.Values(append(slices.Clone(res.Added), res.Replaced...)))
	if !slices.Equal(changed, notes) || len(res.Deleted)+len(res.Replaced) != 1 || res.Undo == "" || res.Stopped == "" {
		t.Fatalf("restore: %+v; want the notes %v back, the later note gone, the sandbox stopped first, an undo backup", res, notes)
	}
	if sb := s.Stopped(t, user, reply); sb.State != state.Stopped {
		t.Fatalf("after the restore: %+v", sb)
	}
	rows, err := s.Admin(ctx, quietLog()).ListBackups(ctx, user)
	if err != nil || len(rows) != 2 || rows[1].ID != res.Undo || rows[1].Files != 1 {
		t.Fatalf("list-backups after the restore: %+v, %v; want the undo backup (the later note) kept", rows, err)
	}
	out, _ = mustAdmin(t, s, "list-backups", user)
	t.Logf("list-backups after the restore:\n%s", out)

	// A new sandbox restores the prefix and lists the notes again.
	c2 := s.DialReady(t, user, coldStart)
	c2.Send("/notes")
	f := c2.Next(reply, "the notes", func(f string) bool { return strings.Contains(f, `"type":"notes"`) })
	var list struct{ Notes []string }
	if err := json.Unmarshal([]byte(f), &list); err != nil || !slices.Equal(list.Notes, []string{"the first note", "the second note"}) {
		t.Fatalf("notes after the restore: %s (%v)", f, err)
	}

	// The restore undone, from the backup it kept: the running sandbox stopped first.
	out, _ = mustAdmin(t, s, "restore-backup", "--from", res.Undo, "-yes", user)
	t.Logf("restore-backup (undo):\n%s", out)
	for _, want := range []string{"restored backup " + res.Undo, "- " + notes[0], "- " + notes[1], "to undo: restore-backup --from "} {
		if !strings.Contains(out, want) {
			t.Errorf("undo output lacks %q", want)
		}
	}
	if got := string(s.Object(t, user, notes[0])); got != "" {
		t.Errorf("after the undo the first note is %q in the bucket", got)
	}
}

// attackBackups has each credential try to list, read, overwrite and delete the
// user's backup, by key, by copy either way, by batch and by multipart; every attempt
// must be refused, and the backup must verify unchanged after.
func attackBackups(t *testing.T, s *testkit.Stack, user string, m *backup.Manifest, creds map[string]aws.Config) {
	t.Helper()
	ctx := context.Background()
	refs, _ := backup.List(ctx, s.Objects(), user)
	manifest := refs[0].Key
	content := backup.ObjectKey(m.Entries[0].SHA256)
	own := taskenv.UserPrefix(user) + objsync.FilesDir + m.Entries[0].Path
	b := aws.String(s.Bucket)
	ownRead := 0 // not vacuous: the sandbox's storage credential does reach its own prefix
	for who, cfg := range creds {
		cl := s.StorageAs(cfg.Credentials)
		if out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(own)}); err == nil {
			out.Body.Close()
			ownRead++
		}
		denied := func(what string, err error) {
			t.Helper()
			// S3's IAM answers 403 AccessDenied; R2 answers a path outside a temporary
			// credential's with 403, an AWS key it does not know with 401 Unauthorized.
			if code := testkit.StatusCode(err); code != http.StatusForbidden && code != http.StatusUnauthorized {
				t.Errorf("%s: %s: %v (%s), want refused", who, what, err, testkit.ErrorCode(err))
			}
		}
		for _, p := range []string{backup.Root, backup.ManifestsDir + user + "/", backup.ObjectsDir, ""} {
			_, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: b, Prefix: aws.String(p)})
			denied("ListObjectsV2 "+p, err)
		}
		_, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(manifest)})
		denied("GetObject of its manifest", err)
		_, err = cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String(content)})
		denied("HeadObject of a backed-up content", err)
		_, err = cl.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(content)})
		denied("GetObject of a backed-up content", err)
		_, err = cl.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String(manifest), Body: strings.NewReader(`{"version":1}`)})
		denied("PutObject over its manifest", err)
		_, err = cl.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String(content), Body: strings.NewReader("tampered")})
		denied("PutObject over a content", err)
		_, err = cl.CopyObject(ctx, &s3.CopyObjectInput{Bucket: b, Key: aws.String(content), CopySource: aws.String(s.Bucket + "/" + own)})
		denied("CopyObject of its own file over a content", err)
		_, err = cl.CopyObject(ctx, &s3.CopyObjectInput{Bucket: b, Key: aws.String(own + ".stolen"), CopySource: aws.String(s.Bucket + "/" + manifest)})
		denied("CopyObject of its manifest into its own prefix", err)
		_, err = cl.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String(content)})
		denied("CreateMultipartUpload over a content", err)
		_, err = cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: b, Key: aws.String(manifest)})
		denied("DeleteObject of its manifest", err)
		out, err := cl.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: b, Delete: &s3types.Delete{Objects: []s3types.ObjectIdentifier{
			{Key: aws.String(manifest)}, {Key: aws.String(content)}, {Key: aws.String(backup.LockKey)}}}})
		if err == nil && len(out.Errors) != 3 {
			t.Errorf("%s: DeleteObjects of its backup: %d of 3 keys refused", who, len(out.Errors))
		} else if err != nil {
			denied("DeleteObjects of its backup", err)
		}
	}
	if ownRead == 0 {
		t.Error("no credential read even its own file: the refusals prove nothing")
	}
	got, err := backup.Load(ctx, s.Objects(), refs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := backup.Verify(ctx, s.Objects(), got); err != nil || got.Files != m.Files {
		t.Fatalf("the backup after the attacks: %v", err)
	}
}

// In R2 mode the same attempts with what the vendor hands a sandbox there — its AWS
// session and its R2 temporary credentials for users/<id>/ — are refused as well: the
// backups area is outside every path a sandbox's credential names.
func TestR2_SandboxCredentials_CannotReachBackups(t *testing.T) {
	t.Parallel()
	s := r2apps.Get(t)
	ctx := context.Background()
	f := newVictim(t, s)
	// The attacker's prefix as a finished sync leaves it, backed up with the parent key
	// (as the Cleanup function does in R2 mode).
	store := s.Objects()
	prefix := taskenv.UserPrefix(f.attacker)
	body := []byte("the attacker's own note")
	sum := sha256.Sum256(body)
	key, meta, err := objsync.FileObject(prefix, "notes/mine.txt", 0o644, time.Now(), hex.EncodeToString(sum[:]), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta}); err != nil {
		t.Fatal(err)
	}
	mkey, mbody, mmeta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 1, Time: time.Now(), Files: 1, Bytes: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, objsync.PutInput{Key: mkey, Body: bytes.NewReader(mbody), Size: int64(len(mbody)), Meta: mmeta}); err != nil {
		t.Fatal(err)
	}
	b := &backup.Backer{Store: store}
	l, err := backup.AcquireWait(ctx, store, "test", 0, time.Minute, 100*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Backup(ctx, l, f.attacker, backup.Options{Reason: "test"})
	if rerr := l.Release(ctx); err != nil || rerr != nil {
		t.Fatalf("backup: %v, %v", err, rerr)
	}
	ref, err := backup.Find(ctx, store, f.attacker, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.Load(ctx, store, ref)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := vendAs(t, s, s.TaskRoleSession(t, f.task), vendRequest(f.lease))
	if err != nil || creds.Storage == nil {
		t.Fatalf("the attacker's own task: %+v, %v", creds, err)
	}
	r2 := s.AWS.Copy()
	r2.Credentials = credentials.NewStaticCredentialsProvider(creds.Storage.AccessKeyID, creds.Storage.SecretAccessKey, creds.Storage.SessionToken)
	attackBackups(t, s, f.attacker, m, map[string]aws.Config{
		"the R2 temporary credentials": r2,
		"the vended AWS session":       sessionOf(s, creds),
		"the task role":                s.TaskRoleSession(t, f.task),
	})
}

// A user who connects during a restore, and sends a frame, waits and is served after
// it: the restore holds the user's lease STOPPING, so the connect hears `stopping`, the
// frame is queued, and the restart they ask for starts a sandbox on the restored files
// once the restore has released the lease. The test holds the backups area's lock, which
// the restore waits for with the user's lease already held: the window is the test's.
func TestBackup_ConnectDuringRestore_ServedAfter(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Overrides["SYNC_INTERVAL"] = "1s"
		noIdleStop(o)
	})
	ctx := context.Background()
	user := "user_restorewait" + randomHex(4)
	c := s.DialReady(t, user, coldStart)
	c.Note("kept by the backup", reply)
	s.NotesSynced(t, user, 1, reply)
	if sum := invokeCleanup(t, s, "CleanupFunction"); sum.Backups == nil || sum.Backups.BackedUp != 1 {
		t.Fatalf("cleanup: %+v; want the user backed up", sum.Backups)
	}
	refs, err := backup.List(ctx, s.Objects(), user)
	if err != nil || len(refs) != 1 {
		t.Fatalf("backups: %v, %v", refs, err)
	}
	c.Note("lost by the restore", reply)
	s.NotesSynced(t, user, 2, reply)
	c.Close()

	held, err := backup.AcquireWait(ctx, s.Objects(), "the test", 0, time.Minute, 100*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		res *ops.Restored
		err error
	}
	restored := make(chan result, 1)
	go func() {
		res, err := s.Admin(ctx, quietLog()).RestoreBackup(ctx, user, refs[0].ID)
		restored <- result{res, err}
	}()
	s.WaitState(t, user, coldStart, "held by the restore", func(sb *state.Sandbox) bool {
		return sb.State == state.Stopping && sb.TaskARN == "" && sb.Live(time.Now())
	})

	c2 := s.Dial(t, user)
	c2.Status("stopping", reply)
	c2.Send("/notes")
	select {
	case r := <-restored:
		t.Fatalf("the restore ended while the test held the backups lock: %+v, %v", r.res, r.err)
	default:
	}
	if n := len(s.RunTasks(user)); n != 1 {
		t.Fatalf("%d sandboxes started while the restore held the user; want only the first", n)
	}

	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-restored
	if r.err != nil {
		t.Fatalf("restore: %v", r.err)
	}
	c2.Status("ready", coldStart)
	f := c2.Next(reply, "the notes", func(f string) bool { return strings.Contains(f, `"type":"notes"`) })
	var list struct{ Notes []string }
	if err := json.Unmarshal([]byte(f), &list); err != nil || !slices.Equal(list.Notes, []string{"kept by the backup"}) {
		t.Fatalf("the frame sent during the restore was answered with %s (%v); want the restored notes", f, err)
	}
}
