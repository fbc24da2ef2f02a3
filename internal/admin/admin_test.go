package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
)

// closed records the connections an operation closed (the management API's
// DeleteConnection, as the relay calls it).
type closed struct {
	mu  sync.Mutex
	ids []string
}

func (c *closed) Close(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, id)
	return nil
}

type env struct {
	a      *ops.Admin
	db     *testkit.DB
	store  *state.Store
	bucket *s3bucket.Bucket
	audit  *bytes.Buffer
}

// newEnv is an Admin over DynamoDB Local, the local ECS and S3, on the table's clock.
func newEnv(t *testing.T) *env {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	db := testkit.NewDB(t)
	store := db.Store()
	ecs := testkit.StartECS(t, log)
	tasks := ecs.Launcher(log, db.Table, "http://127.0.0.1:1/local")
	bucket := testkit.StartS3(t, s3local.Config{}).Bucket(s3bucket.Options{UsePathStyle: true})
	audit := &bytes.Buffer{}
	a := &ops.Admin{Store: store, Tasks: tasks, Bucket: bucket, Conns: &closed{},
		Cleaner: &cleanup.Cleaner{Store: store, Tasks: tasks, Log: log, Now: db.Clock.Now},
		Audit:   &ops.Audit{Log: logging.New(audit, slog.LevelInfo), Caller: "arn:aws:iam::123456789012:user/ops"},
		Log:     log, Now: db.Clock.Now, Poll: 20 * time.Millisecond, RevokeSettle: 50 * time.Millisecond}
	return &env{a: a, db: db, store: store, bucket: bucket, audit: audit}
}

func (e *env) put(t *testing.T, b objsync.Bucket, key, body string) {
	t.Helper()
	if _, err := b.Put(context.Background(), objsync.PutInput{Key: key, Body: strings.NewReader(body), Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
}

func keys(t *testing.T, b objsync.Bucket, prefix string) []string {
	t.Helper()
	page, err := b.List(context.Background(), prefix, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range page.Objects {
		out = append(out, o.Key)
	}
	return out
}

// Bad input: a malformed id, an unknown user, a user whose sandbox is starting without
// a task yet, one whose data is being purged — each a clear error, nothing changed,
// and the audit line says so.
func TestAdmin_Stop_Refusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.Acquire(ctx, "user_midstart"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AcquirePurge(ctx, "user_midpurge"); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]error{
		"user_midstart": ops.ErrMidStart, "user_midpurge": ops.ErrMidPurge,
		"user_nobody": ops.ErrUnknownUser, "user_a/../b": ops.ErrBadUserID, "": ops.ErrBadUserID,
	} {
		before, _ := e.store.Get(ctx, user)
		if _, err := e.a.Stop(ctx, user, true); !errors.Is(err, want) {
			t.Errorf("stop %q: %v, want %v", user, err, want)
		}
		if after, _ := e.store.Get(ctx, user); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("stop %q changed the record: %v → %v", user, before, after)
		}
	}
	if !strings.Contains(e.audit.String(), `"result":"error: user_midstart: sandbox is starting and names no task yet`) {
		t.Errorf("audit:\n%s", e.audit)
	}
}

// A deletion that died partway (the purge lock taken and deletion begun) refuses its
// user's starts; delete-user refuses while the lock's term runs, then resumes it and
// finishes: no object, no item but the revocation. Another user is untouched.
func TestAdmin_DeleteUser_ResumesAnUnfinishedPurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_gone", "user_kept"} {
		for i := range 3 {
			e.put(t, e.bucket, fmt.Sprintf("users/%s/files/f%d", u, i), u)
		}
		if _, err := e.store.AddConnection(ctx, u, "c-"+u); err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.store.AcquirePurge(ctx, "user_gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.BeginPurge(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.DeleteUser(ctx, "user_gone"); !errors.Is(err, ops.ErrMidPurge) {
		t.Fatalf("while the lock's term runs: %v", err)
	}
	if got := keys(t, e.bucket, "users/user_gone/"); len(got) != 3 {
		t.Fatalf("deleted while refusing: %v", got)
	}
	e.db.Clock.Advance(e.store.PurgeTTL + time.Second)
	plan, err := e.a.PlanDeletion(ctx, "user_gone")
	if err != nil || plan.Objects != 3 || plan.State != string(state.Purging) {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	d, err := e.a.DeleteUser(ctx, "user_gone")
	if err != nil {
		t.Fatal(err)
	}
	if d.DeletedObjects != 3 || d.NotBefore == nil {
		t.Fatalf("deletion %+v", d)
	}
	if got := keys(t, e.bucket, "users/user_gone/"); len(got) != 0 {
		t.Fatalf("objects left: %v", got)
	}
	if items, err := e.store.UserItems(ctx, "user_gone"); err != nil || fmt.Sprint(items) != "[ACCESS#user_gone / ACCESS]" {
		t.Fatalf("items left: %v, %v", items, err)
	}
	if got := keys(t, e.bucket, "users/user_kept/"); len(got) != 3 {
		t.Fatalf("the other user's objects: %v", got)
	}
	if items, _ := e.store.UserItems(ctx, "user_kept"); len(items) != 1 {
		t.Fatalf("the other user's items: %v", items)
	}
}

// import-bucket from another store (objects read and written, no server-side copy):
// the per-user trees and, only when named, the flat root tree, as the agent stores
// files, with a marker; what does not map is reported, a user with a live sandbox is
// skipped, an existing different file is a conflict; a second run copies nothing.
func TestAdmin_ImportBucket_FromAnotherStore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	src := testkit.StartS3(t, s3local.Config{}).Bucket(s3bucket.Options{UsePathStyle: true})
	for k, v := range map[string]string{
		"users/user_a/config/clawdbot.json":  `{"a":1}`,
		"users/user_a/workspace/deep/x.txt":  "x",
		"users/user_a/.last-sync":            "old",
		"users/user_a/workspace/":            "",
		"users/user_live/workspace/y.txt":    "y",
		"users/user_c/workspace/z.txt":       "the original",
		"users/not_ok!/config/clawdbot.json": "{}",
		"config/clawdbot.json":               `{"flat":1}`,
		"elsewhere/thing":                    "?",
	} {
		e.put(t, src, k, v)
	}
	e.put(t, e.bucket, "users/user_c/files/workspace/z.txt", "sandgate's")
	if _, err := e.store.Acquire(ctx, "user_live"); err != nil {
		t.Fatal(err)
	}
	opts := ops.ImportOptions{Source: src, SourceName: "original", DryRun: true}
	imp, err := e.a.ImportBucket(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(keys(t, e.bucket, "users/")); n != 1 {
		t.Fatalf("the dry run wrote: %d keys", n)
	}
	var skipped []string
	for _, s := range imp.Skipped {
		skipped = append(skipped, s.Key)
	}
	if got := strings.Join(skipped, " "); got != "config/clawdbot.json elsewhere/thing users/not_ok!/ users/user_a/workspace/" {
		t.Errorf("skipped %q", got)
	}

	opts.DryRun, opts.FlatTo = false, "user_b"
	if imp, err = e.a.ImportBucket(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if imp.Copied != 3 || imp.Conflicts != 1 || imp.Present != 0 {
		t.Fatalf("import %+v", imp)
	}
	for _, u := range imp.Users {
		if u.UserID == "user_live" && !strings.HasPrefix(u.Skipped, "live sandbox (STARTING)") {
			t.Errorf("the live user: %+v", u)
		}
	}
	for key, want := range map[string]string{
		"users/user_a/files/config/clawdbot.json": `{"a":1}`,
		"users/user_a/files/workspace/deep/x.txt": "x",
		"users/user_b/files/config/clawdbot.json": `{"flat":1}`,
		"users/user_c/files/workspace/z.txt":      "sandgate's",
	} {
		info, body, err := e.bucket.Get(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		if string(b) != want || (key != "users/user_c/files/workspace/z.txt" && objsync.ObjectSHA256(info.Meta) == "") {
			t.Errorf("%s: %q, meta %v", key, b, info.Meta)
		}
	}
	if got := keys(t, e.bucket, "users/user_live/"); len(got) != 0 {
		t.Errorf("imported into a live sandbox: %v", got)
	}
	if got := keys(t, e.bucket, "users/user_a/.last-sync"); len(got) != 1 {
		t.Errorf("user_a's marker: %v", got)
	}
	if imp, err = e.a.ImportBucket(ctx, opts); err != nil || imp.Copied != 0 || imp.Present != 3 || imp.Conflicts != 1 {
		t.Fatalf("second run %+v, %v", imp, err)
	}
	if _, err := e.a.ImportBucket(ctx, ops.ImportOptions{Source: src, FlatTo: "USER_B"}); !errors.Is(err, ops.ErrBadUserID) {
		t.Fatalf("-flat-to a bad id: %v", err)
	}
}

// reconcile is the cleanup pass's repair (a drifted counter corrected) and reports a
// running task that no live lease names, without stopping it.
func TestAdmin_Reconcile_CorrectsTheCounterReportsUnnamedTasks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_live")
	if err != nil {
		t.Fatal(err)
	}
	arn, err := e.a.Tasks.(interface {
		Launch(context.Context, launcher.Spec) (string, error)
	}).Launch(ctx, launcher.Spec{UserID: "user_live", LeaseToken: l.Token, Generation: l.Generation})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetTask(ctx, l, arn); err != nil {
		t.Fatal(err)
	}
	stray, err := e.a.Tasks.(interface {
		Launch(context.Context, launcher.Spec) (string, error)
	}).Launch(ctx, launcher.Spec{UserID: "user_nobody", LeaseToken: "stray-token", Generation: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Raw.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(e.db.Table),
		Key: map[string]types.AttributeValue{state.AttrPK: &types.AttributeValueMemberS{Value: "CAPACITY"},
			state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOXES"}},
		UpdateExpression:          aws.String("ADD live :n"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: "4"}},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := e.a.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Counter.Corrected || r.Counter.Counter != 5 || r.Counter.Held != 1 || fmt.Sprint(r.Unnamed) != "["+stray+"]" {
		t.Fatalf("reconcile %+v", r)
	}
	if n, err := e.store.Capacity(ctx); err != nil || n != 1 {
		t.Fatalf("counter %d, %v", n, err)
	}
	task, err := e.a.Tasks.Describe(ctx, stray)
	if err != nil || task.Stopped() {
		t.Fatalf("the unnamed task was stopped: %+v, %v", task, err)
	}
}
