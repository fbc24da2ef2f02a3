package cleanup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const day = 24 * time.Hour

type env struct {
	db       *testkit.DB
	store    *state.Store
	ecs      *testkit.ECS
	gw       *testkit.Gateway
	launcher *launcher.Launcher
	ens      *ensure.Ensurer
	bucket   *s3bucket.Bucket
	logs     *testkit.Logs
	c        *cleanup.Cleaner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, log)
	e.gw = testkit.StartGateway(t, log, testkit.Routes{Connect: "record"}, testkit.Funcs{"record": testkit.Recording(e.store)})
	e.launcher = e.ecs.Launcher(log, e.db.Table, e.gw.Server.ManagementEndpoint())
	e.ens = &ensure.Ensurer{Store: e.store, Launcher: e.launcher, Log: log}
	e.bucket = testkit.StartS3(t, s3local.Config{Bucket: testkit.Bucket, Log: log}).Bucket(s3bucket.Options{UsePathStyle: true})
	e.bucket.PageSize = 2 // several pages, several delete batches
	e.c = &cleanup.Cleaner{
		Store: e.store, Tasks: e.launcher, Bucket: e.bucket,
		Relay:   &relay.Relay{API: e.gw.Mgmt, Conns: e.store, Log: log},
		Metrics: metrics.New(e.logs), Log: log, Now: e.db.Clock.Now,
		Stage: "test", Retention: 90 * day, OrphanGrace: -1,
	}
	return e
}

func (e *env) put(t *testing.T, user string, n int) {
	t.Helper()
	for i := range n {
		body := []byte(fmt.Sprintf("file %d of %s", i, user))
		if _, err := e.bucket.Put(context.Background(), objsync.PutInput{
			Key: fmt.Sprintf("users/%s/files/f%d.txt", user, i), Body: bytes.NewReader(body), Size: int64(len(body)),
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) keys(t *testing.T, user string) int {
	t.Helper()
	n, token := 0, ""
	for {
		page, err := e.bucket.List(context.Background(), "users/"+user+"/", token)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Objects)
		if token = page.Next; token == "" {
			return n
		}
	}
}

// stopped leaves user with a STOPPED record whose last activity is now, its task
// seen to stop (the slot given back).
func (e *env) stopped(t *testing.T, user string) {
	t.Helper()
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.TaskStopped(ctx, state.TaskRef{UserID: user, Generation: l.Generation}, "test: task stopped"); err != nil {
		t.Fatal(err)
	}
}

// atLevel returns the lines logged at level.
func atLevel(lines []map[string]any, level slog.Level) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l[slog.LevelKey] == level.String() {
			out = append(out, l)
		}
	}
	return out
}

// summaries returns the pass summaries logged: the lines that carry the Summary's
// fields.
func summaries(t *testing.T, logs *testkit.Logs) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logs.Lines(t) {
		if _, ok := l["dryRun"]; ok {
			out = append(out, l)
		}
	}
	return out
}

func (e *env) run(t *testing.T) cleanup.Summary {
	t.Helper()
	sum, err := e.c.Handle(context.Background(), json.RawMessage(`{}`))
	if err != nil {
		t.Fatalf("cleanup: %v (summary %+v)", err, sum)
	}
	return sum
}

func (e *env) taskRunning(t *testing.T, arn string) bool {
	t.Helper()
	for _, ti := range e.ecs.Server.Tasks() {
		if ti.ARN == arn {
			return ti.DesiredStatus != "STOPPED"
		}
	}
	return false
}

// A sandbox whose lease expired is reaped: record STOPPED, slot given back, task
// stopped, clients told. A live one beside it is left alone.
func TestCleaner_Run_ReapsDeadSandbox(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dead, err := e.ens.Ensure(ctx, "user_dead")
	if err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_dead")
	e.db.Clock.Advance(state.DefaultStartTTL)
	live, err := e.ens.Ensure(ctx, "user_live")
	if err != nil {
		t.Fatal(err)
	}
	sum := e.run(t)
	if sum.Reaped != 1 || sum.Live != 1 || sum.Capacity != 1 || sum.Orphans != 0 || sum.Purged != 0 {
		t.Fatalf("summary %+v", sum)
	}
	sb, err := e.store.Get(ctx, "user_dead")
	if err != nil || sb.State != state.Stopped || sb.Reason != state.ReasonExpired {
		t.Fatalf("dead record %+v, %v", sb, err)
	}
	if e.taskRunning(t, dead.Sandbox.TaskARN) || !e.taskRunning(t, live.Sandbox.TaskARN) {
		t.Fatalf("tasks %+v", e.ecs.Server.Tasks())
	}
	if f := c.NextFrame(); f.Type != frames.TypeStatus || f.State != frames.Stopping {
		t.Fatalf("client heard %+v", f)
	}
	// A second pass finds nothing more to do.
	if sum := e.run(t); sum.Reaped != 0 || sum.Live != 1 || sum.Orphans != 0 || sum.Capacity != 1 {
		t.Fatalf("second pass %+v", sum)
	}
}

// A holder that renewed after the scan read its record keeps its sandbox.
func TestCleaner_Run_RenewedHolderKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	res, err := e.ens.Ensure(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := e.store.Get(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	// The agent renews between the scan and the reap.
	e.c.Store = renewing{Store: e.store, renew: func() {
		if _, err := e.store.Heartbeat(ctx, sb.Lease(), time.Time{}); err != nil {
			t.Error(err)
		}
	}}
	sum := e.run(t)
	if sum.Reaped != 0 || sum.Live != 1 || !e.taskRunning(t, res.Sandbox.TaskARN) {
		t.Fatalf("summary %+v, tasks %+v", sum, e.ecs.Server.Tasks())
	}
	if got, _ := e.store.Get(ctx, "user_a"); got.State != state.Starting {
		t.Fatalf("record %+v", got)
	}
}

// renewing renews the lease right before each Reap.
type renewing struct {
	*state.Store
	renew func()
}

func (r renewing) Reap(ctx context.Context, sb *state.Sandbox) error {
	r.renew()
	return r.Store.Reap(ctx, sb)
}

// Tasks no live lease names are stopped once past the grace period; a task its live
// lease names, or one whose lease names no task yet, is kept; a young task is kept.
func TestCleaner_Run_StopsOrphans(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	owned, err := e.ens.Ensure(ctx, "user_owned")
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := e.launcher.Launch(ctx, launcher.Spec{UserID: "user_orphan", LeaseToken: "tok-orphan-0123456789", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A start whose SetTask has not landed: a live lease naming no task.
	l, err := e.store.Acquire(ctx, "user_pending")
	if err != nil {
		t.Fatal(err)
	}
	pending, err := e.launcher.Launch(ctx, launcher.Spec{UserID: "user_pending", LeaseToken: l.Token, Generation: l.Generation})
	if err != nil {
		t.Fatal(err)
	}
	// A superseded task: its user's live lease names another one.
	stale, err := e.launcher.Launch(ctx, launcher.Spec{UserID: "user_owned", LeaseToken: "tok-stale-0123456789", Generation: 0})
	if err != nil {
		t.Fatal(err)
	}
	e.c.OrphanGrace = time.Hour
	if sum := e.run(t); sum.Orphans != 0 {
		t.Fatalf("young tasks stopped: %+v", sum)
	}
	e.c.OrphanGrace = -1
	sum := e.run(t)
	if sum.Orphans != 2 || sum.Live != 2 {
		t.Fatalf("summary %+v", sum)
	}
	for arn, want := range map[string]bool{owned.Sandbox.TaskARN: true, pending: true, orphan: false, stale: false} {
		if got := e.taskRunning(t, arn); got != want {
			t.Errorf("task %s running = %v, want %v", arn, got, want)
		}
	}
	// One warning for each task stopped, none for the others.
	for arn, want := range map[string]int{owned.Sandbox.TaskARN: 0, pending: 0, orphan: 1, stale: 1} {
		if got := len(atLevel(e.logs.With(t, logging.TaskARN, arn), slog.LevelWarn)); got != want {
			t.Errorf("task %s: %d warnings, want %d: %v", arn, got, want, e.logs.With(t, logging.TaskARN, arn))
		}
	}
}

// The data of a user inactive past the retention is deleted and their record goes;
// an active user's data stays.
func TestCleaner_Run_PurgesInactiveUser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 5)
	e.db.Clock.Advance(91 * day)
	e.stopped(t, "user_new")
	e.put(t, "user_new", 3)
	sum := e.run(t)
	if sum.Purged != 1 || sum.WouldPurge != 0 || sum.Errors != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if e.keys(t, "user_old") != 0 || e.keys(t, "user_new") != 3 {
		t.Fatalf("keys: old %d, new %d", e.keys(t, "user_old"), e.keys(t, "user_new"))
	}
	if _, err := e.store.Get(ctx, "user_old"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("purged user's record: %v", err)
	}
	if lines := atLevel(e.logs.With(t, "deleted", 5.0), slog.LevelInfo); len(lines) != 1 || lines[0][logging.UserID] != "user_old" {
		t.Fatalf("log %v", lines)
	}
	// The user comes back: a fresh sandbox, nothing to restore.
	if res, err := e.ens.Ensure(ctx, "user_old"); err != nil || !res.Started {
		t.Fatalf("return after purge: %+v, %v", res, err)
	}
}

// DRY_RUN reports whom it would purge and deletes nothing.
func TestCleaner_Run_DryRunDeletesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 4)
	e.db.Clock.Advance(91 * day)
	e.c.DryRun = true
	sum := e.run(t)
	if sum.Purged != 0 || sum.WouldPurge != 1 || !sum.DryRun {
		t.Fatalf("summary %+v", sum)
	}
	if n := e.keys(t, "user_old"); n != 4 {
		t.Fatalf("dry run deleted: %d keys left", n)
	}
	if sb, err := e.store.Get(ctx, "user_old"); err != nil || sb.State != state.Stopped {
		t.Fatalf("record %+v, %v", sb, err)
	}
	if lines := atLevel(e.logs.With(t, "prefix", "users/user_old/"), slog.LevelInfo); len(lines) != 1 || lines[0][logging.UserID] != "user_old" {
		t.Fatalf("log %v", lines)
	}
}

// A user with a connection record, or with a live sandbox, is never purged.
func TestCleaner_Run_ConnectedOrLiveUserKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_conn")
	e.put(t, "user_conn", 2)
	e.db.Clock.Advance(91 * day)
	if _, err := e.store.AddConnection(ctx, "user_conn", "c1"); err != nil {
		t.Fatal(err)
	}
	if sum := e.run(t); sum.Purged != 0 || e.keys(t, "user_conn") != 2 {
		t.Fatalf("summary %+v, keys %d", sum, e.keys(t, "user_conn"))
	}
}

// raceBucket runs during, after the first batch is deleted, what a connect would do.
type raceBucket struct {
	objsync.Bucket
	once   sync.Once
	during func()
}

func (r *raceBucket) Delete(ctx context.Context, keys []string) error {
	err := r.Bucket.Delete(ctx, keys)
	r.once.Do(r.during)
	return err
}

// A connect racing a purge cannot start a sandbox while the prefix is half deleted:
// the purge lock refuses it; once the purge is done, the start finds nothing left.
func TestCleaner_Run_PurgeExcludesStart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 7)
	e.db.Clock.Advance(91 * day)
	var midway int
	var during error
	e.c.Bucket = &raceBucket{Bucket: e.bucket, during: func() {
		midway = e.keys(t, "user_old")
		_, during = e.ens.Ensure(ctx, "user_old")
	}}
	sum := e.run(t)
	if sum.Purged != 1 {
		t.Fatalf("summary %+v", sum)
	}
	if midway == 0 || midway == 7 {
		t.Fatalf("the race did not happen mid-purge: %d keys left at the time", midway)
	}
	if !errors.Is(during, ensure.ErrPurging) {
		t.Fatalf("start during the purge: %v", during)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a task started during the purge")
	}
	res, err := e.ens.Ensure(ctx, "user_old")
	if err != nil || !res.Started || e.keys(t, "user_old") != 0 {
		t.Fatalf("after the purge: %+v, %v, %d keys", res, err, e.keys(t, "user_old"))
	}
}

// One summary line and one metrics line per pass, whatever happened.
func TestCleaner_Run_SummaryAndMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.ens.Ensure(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	lines := summaries(t, e.logs)
	if len(lines) != 1 || lines[0]["liveSandboxes"] != 1.0 || lines[0]["reaped"] != 0.0 || lines[0]["dryRun"] != false {
		t.Fatalf("summary lines %v", lines)
	}
	var emf []map[string]any
	for _, l := range e.logs.Lines(t) {
		if _, ok := l["_aws"]; ok {
			emf = append(emf, l)
		}
	}
	if len(emf) != 1 || emf[0]["Stage"] != "test" || emf[0][metrics.LiveSandboxes] != 1.0 || emf[0][metrics.Reaped] != 0.0 ||
		emf[0][metrics.Orphans] != 0.0 || emf[0][metrics.Purged] != 0.0 {
		t.Fatalf("metric lines %v", emf)
	}
}

// A store that cannot be reached fails the pass (so the function's Errors alarm
// fires), still logs its summary, and deletes nothing.
func TestCleaner_Run_StoreDown(t *testing.T) {
	e := newEnv(t)
	e.stopped(t, "user_old")
	e.put(t, "user_old", 2)
	e.db.Clock.Advance(91 * day)
	down := state.New(e.db.Client, "no-such-table")
	down.Now = e.db.Clock.Now
	e.c.Store = down
	sum, err := e.c.Handle(context.Background(), json.RawMessage(`"anything"`))
	if err == nil || sum.Errors == 0 || e.keys(t, "user_old") != 2 {
		t.Fatalf("summary %+v, err %v", sum, err)
	}
	if len(summaries(t, e.logs)) != 1 {
		t.Fatal("no summary line")
	}
}

func TestLoadConfig_Environment(t *testing.T) {
	m := map[string]string{
		"TABLE_NAME": "t", "ECS_CLUSTER": "c", "BUCKET": "b", "RETENTION_DAYS": "30", "DRY_RUN": "true",
		"MANAGEMENT_ENDPOINT": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
		"STORAGE_REGION":      "auto", "STORAGE_PATH_STYLE": "true",
	}
	env := config.New(config.Map(m))
	c := cleanup.LoadConfig(env)
	if err := env.Err(); err != nil || c.Retention != 30*day || !c.DryRun || !c.Storage.UsePathStyle || c.Storage.Region != "auto" {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, k := range cleanup.Optional {
		delete(m, k)
	}
	env = config.New(config.Map(m))
	if c = cleanup.LoadConfig(env); env.Err() != nil || c.Retention != 90*day || c.DryRun {
		t.Fatalf("defaults %+v, %v", c, env.Err())
	}
	m["MANAGEMENT_ENDPOINT"] = "https://abc.execute-api.eu-west-1.amazonaws.com"
	m["RETENTION_DAYS"] = "0"
	m["DRY_RUN"] = "maybe"
	m["SECRETS_REFRESH"] = "0s"
	delete(m, "BUCKET")
	env = config.New(config.Map(m))
	cleanup.LoadConfig(env)
	err := env.Err()
	for _, k := range []string{"MANAGEMENT_ENDPOINT", "RETENTION_DAYS", "DRY_RUN", "SECRETS_REFRESH", "BUCKET"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
}

// A purge whose deletes fail keeps the lock (no start restores a half-deleted prefix)
// and reports the failure; once the lock expires it still refuses starts, and the
// next pass resumes the purge.
func TestCleaner_Run_PurgeFailureKeepsLock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s3 := testkit.StartS3(t, s3local.Config{Bucket: testkit.Bucket})
	srv := s3.Server
	e.bucket = s3.Bucket(s3bucket.Options{UsePathStyle: true, MaxAttempts: 1})
	e.c.Bucket = e.bucket
	e.stopped(t, "user_old")
	e.put(t, "user_old", 3)
	e.db.Clock.Advance(91 * day)
	// DeleteObjects is a POST.
	if err := srv.Faults.Inject(s3local.Fault{Method: "POST", Status: 500}); err != nil {
		t.Fatal(err)
	}
	sum, err := e.c.Run(ctx)
	if err == nil || sum.Purged != 0 || sum.Errors == 0 || e.keys(t, "user_old") != 3 {
		t.Fatalf("summary %+v, err %v, %d keys", sum, err, e.keys(t, "user_old"))
	}
	if sb, err := e.store.Get(ctx, "user_old"); err != nil || sb.State != state.Purging {
		t.Fatalf("record %+v, %v: the purge lock must stay", sb, err)
	}
	if _, err := e.ens.Ensure(ctx, "user_old"); !errors.Is(err, ensure.ErrPurging) {
		t.Fatalf("start during a failed purge: %v", err)
	}
	srv.Faults.Clear()
	e.db.Clock.Advance(state.DefaultPurgeTTL)
	if _, err := e.ens.Ensure(ctx, "user_old"); !errors.Is(err, ensure.ErrPurging) {
		t.Fatalf("start on the expired lock of a failed purge: %v", err)
	}
	// The next pass resumes the purge and finishes it.
	if sum := e.run(t); sum.Purged != 1 || e.keys(t, "user_old") != 0 {
		t.Fatalf("retry %+v, %d keys", sum, e.keys(t, "user_old"))
	}
}

// failingBucket fails every Delete after the first n, as a purge that dies partway
// does (a delete error, or the function's timeout).
type failingBucket struct {
	objsync.Bucket
	mu sync.Mutex
	n  int
}

func (f *failingBucket) Delete(ctx context.Context, keys []string) error {
	f.mu.Lock()
	f.n--
	fail := f.n < 0
	f.mu.Unlock()
	if fail {
		return errors.New("injected: delete failed")
	}
	return f.Bucket.Delete(ctx, keys)
}

// hookedStore runs a function before each Connections call of one pass: what the user
// does between cleanup's scan and its lock (or between the lock and the delete).
type hookedStore struct {
	*state.Store
	mu    sync.Mutex
	calls int
	hook  func(call int)
}

func (h *hookedStore) Connections(ctx context.Context, userID string) ([]state.Connection, error) {
	h.mu.Lock()
	h.calls++
	call := h.calls
	h.mu.Unlock()
	h.hook(call)
	return h.Store.Connections(ctx, userID)
}

// A purge that fails after its first delete batch (which held the .last-sync marker,
// sorting before files/) leaves a half-deleted prefix. Its lock, even expired, must
// refuse starts, or the next sandbox would restore what survived and write a fresh
// marker over it. The next pass resumes and finishes the purge, even though the
// user is connected by then: deletion had begun, so the data cannot be given back.
func TestCleaner_Run_FailedPurgeResumedNeverRestored(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 5)
	marker := []byte(`{"generation":1}`)
	if _, err := e.bucket.Put(ctx, objsync.PutInput{Key: "users/user_old/.last-sync", Body: bytes.NewReader(marker), Size: int64(len(marker))}); err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(91 * day)
	e.c.Bucket = &failingBucket{Bucket: e.bucket, n: 1}
	sum, err := e.c.Run(ctx)
	if err == nil || sum.Purged != 0 || sum.Errors != 1 {
		t.Fatalf("failing pass: %+v, %v", sum, err)
	}
	if n := e.keys(t, "user_old"); n != 4 {
		t.Fatalf("%d keys after the first batch, want 4 (marker and f0 gone)", n)
	}
	sb, err := e.store.Get(ctx, "user_old")
	if err != nil || sb.State != state.Purging || sb.PurgeStarted.IsZero() {
		t.Fatalf("record after the failed purge %+v, %v", sb, err)
	}

	// Long after the lock expired, the user is back: refused, with nothing started.
	e.db.Clock.Advance(2 * state.DefaultPurgeTTL)
	e.c.Bucket = e.bucket
	e.gw.Dial(t, "user_old") // its connection record is what the resumed purge sees
	if _, err := e.ens.Ensure(ctx, "user_old"); !errors.Is(err, ensure.ErrPurging) {
		t.Fatalf("start on the expired lock: %v", err)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a sandbox started on a half-deleted prefix")
	}
	sum = e.run(t)
	if sum.Purged != 1 || sum.Reaped != 0 || e.keys(t, "user_old") != 0 {
		t.Fatalf("resumed pass %+v, %d keys", sum, e.keys(t, "user_old"))
	}
	if lines := e.logs.With(t, logging.Reason, state.ErrPurgeStarted.Error()); len(lines) != 1 || lines[0][logging.UserID] != "user_old" {
		t.Fatalf("log %v", lines)
	}
	if _, err := e.store.Get(ctx, "user_old"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("record after the resumed purge: %v", err)
	}
	if res, err := e.ens.Ensure(ctx, "user_old"); err != nil || !res.Started {
		t.Fatalf("start after the purge: %+v, %v", res, err)
	}
}

// A purge that died after its lock but before any delete is resumed by the next
// pass whatever the retention (a user locked by it is refused meanwhile): with no
// connection it purges, with a connection it gives the lock back and the data stays.
func TestCleaner_Run_StalePurgeBeforeDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_back", "user_gone"} {
		e.stopped(t, u)
		e.put(t, u, 3)
		// Recent activity: only a stale lock, not the retention, makes them candidates.
		if _, err := e.store.AcquirePurge(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.AddConnection(ctx, "user_back", "c1"); err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultPurgeTTL)
	now := e.db.Clock.Now()
	sum := e.run(t)
	if sum.Purged != 1 || sum.Reaped != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if e.keys(t, "user_gone") != 0 || e.keys(t, "user_back") != 3 {
		t.Fatalf("keys: gone %d, back %d", e.keys(t, "user_gone"), e.keys(t, "user_back"))
	}
	sb, err := e.store.Get(ctx, "user_back")
	if err != nil || sb.State != state.Stopped || sb.Reason != state.ReasonPurgeReleased || !sb.LastActivity.Equal(now) {
		t.Fatalf("returning user's record %+v, %v", sb, err)
	}
	if res, err := e.ens.Ensure(ctx, "user_back"); err != nil || !res.Started {
		t.Fatalf("returning user's start: %+v, %v", res, err)
	}
}

// The user connects after the lock is taken (their start is refused): the data is
// kept and the lock given back at once, so they start without waiting for it to
// expire, and their return counts as activity, so later passes leave them alone.
func TestCleaner_Run_UserReturnsDuringPurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 4)
	e.db.Clock.Advance(91 * day)
	e.c.Store = &hookedStore{Store: e.store, hook: func(call int) {
		if call == 2 { // after the lock, before the delete
			if _, err := e.store.AddConnection(ctx, "user_old", "c1"); err != nil {
				t.Error(err)
			}
		}
	}}
	now := e.db.Clock.Now()
	if sum := e.run(t); sum.Purged != 0 || e.keys(t, "user_old") != 4 {
		t.Fatalf("summary %+v, %d keys", sum, e.keys(t, "user_old"))
	}
	sb, err := e.store.Get(ctx, "user_old")
	if err != nil || sb.State != state.Stopped || !sb.LastActivity.Equal(now) {
		t.Fatalf("record after the return %+v, %v: want STOPPED with the return as activity", sb, err)
	}
	if lines := e.logs.With(t, logging.Reason, state.ReasonPurgeReleased); len(lines) != 1 || lines[0][logging.UserID] != "user_old" {
		t.Fatalf("log %v", lines)
	}
	// Later passes, the connection gone, do not purge a user who just came back.
	e.c.Store = e.store
	if err := e.store.RemoveConnection(ctx, "user_old", "c1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.db.Clock.Advance(state.DefaultPurgeTTL)
		if sum := e.run(t); sum.Purged != 0 || e.keys(t, "user_old") != 4 {
			t.Fatalf("later pass %+v, %d keys", sum, e.keys(t, "user_old"))
		}
	}
	if res, err := e.ens.Ensure(ctx, "user_old"); err != nil || !res.Started {
		t.Fatalf("start after the return: %+v, %v", res, err)
	}
}

// The scan judged the user inactive; they started and stopped a sandbox before the
// lock. The lock's condition sees it: skipped, nothing deleted.
func TestCleaner_Run_ActiveSinceScanKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 3)
	e.db.Clock.Advance(91 * day)
	e.c.Store = &hookedStore{Store: e.store, hook: func(call int) {
		if call == 1 { // after the scan, before the lock
			e.stopped(t, "user_old")
		}
	}}
	if sum := e.run(t); sum.Purged != 0 || sum.Errors != 0 || e.keys(t, "user_old") != 3 {
		t.Fatalf("summary %+v, %d keys", sum, e.keys(t, "user_old"))
	}
	if sb, err := e.store.Get(ctx, "user_old"); err != nil || sb.State != state.Stopped {
		t.Fatalf("record %+v, %v", sb, err)
	}
	if lines := e.logs.With(t, logging.Reason, state.ErrActive.Error()); len(lines) != 1 || lines[0][logging.UserID] != "user_old" {
		t.Fatalf("log %v", lines)
	}
}

// Records written before the Sandboxes index (they lack its key) are put into it by
// the pass's backfill before it lists, so the first pass after an upgrade reaps and
// purges them as any other.
func TestCleaner_Run_RecordsFromBeforeTheIndex(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.stopped(t, "user_old")
	e.put(t, "user_old", 3)
	e.db.Clock.Advance(91 * day)
	dead, err := e.ens.Ensure(ctx, "user_dead")
	if err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	for _, u := range []string{"user_old", "user_dead"} { // as an older version wrote them
		if _, err := e.db.Raw.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(e.db.Table),
			Key: map[string]types.AttributeValue{
				state.AttrPK: &types.AttributeValueMemberS{Value: "USER#" + u},
				state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOX"},
			},
			UpdateExpression: aws.String("REMOVE " + state.AttrSandboxOf),
		}); err != nil {
			t.Fatal(err)
		}
	}
	sum := e.run(t)
	if sum.Reaped != 1 || sum.Purged != 1 || sum.Errors != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if e.taskRunning(t, dead.Sandbox.TaskARN) || e.keys(t, "user_old") != 0 {
		t.Fatal("the records from before the index were not acted on")
	}
	if lines := e.logs.With(t, "backfilled", 2.0); len(lines) != 1 {
		t.Fatalf("backfill log %v", lines)
	}
}
