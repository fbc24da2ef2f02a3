package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Two users connecting at once get two sandboxes, each with its own task, address and
// prefix; neither sees the other's frames, notes, files or connections.
func TestStack_TwoUsers_TwoSandboxesIsolated(t *testing.T) {
	s := apps.Get(t)
	users := []string{"user_twoA", "user_twoB"}
	clients := testkit.DialAll(t, users, s.TryDial)
	for i, u := range users {
		c := clients[i]
		if f := c.NextFrame(); f.Type != frames.TypeStatus || f.State != frames.Starting {
			t.Fatalf("%s: first frame %+v", u, f)
		}
		c.Status(frames.Ready, coldStart)
		runs := s.RunTasks(u)
		if len(runs) != 1 || testkit.TaskEnv(runs[0])[taskenv.Prefix] != taskenv.UserPrefix(u) {
			t.Fatalf("%s: %d RunTask calls", u, len(runs))
		}
		c.Note("secret of "+u, reply)
	}
	for i, u := range users {
		wantNotes(t, clients[i], "secret of "+u)
	}
	// Frames: an echo reaches its sender only.
	a, b := clients[0], clients[1]
	a.Send("ping from A")
	a.Next(reply, "echo", testkit.Is("ping from A"))
	b.Send("ping from B")
	if f := b.Next(reply, "echo", func(f string) bool { return strings.HasPrefix(f, "ping") }); f != "ping from B" {
		t.Fatalf("B received %q", f)
	}
	// Two tasks, two addresses.
	ra, rb := s.Running(t, users[0], reply), s.Running(t, users[1], reply)
	if ra.TaskARN == rb.TaskARN || ra.Endpoint == rb.Endpoint {
		t.Fatalf("users share a task or an address: %+v %+v", ra, rb)
	}
	// Files: each prefix holds its own user's note, and only that.
	for _, u := range users {
		s.NotesSynced(t, u, 1, reply)
		files := taskenv.UserPrefix(u) + objsync.FilesDir
		for _, k := range s.Keys(t, files+"notes/") {
			if got := s.Object(t, u, strings.TrimPrefix(k, files)); string(got) != "secret of "+u+"\n" {
				t.Fatalf("%s's prefix holds %s: %q", u, k, got)
			}
		}
	}
	// Connections: one each.
	for _, u := range users {
		conns, err := s.Store.Connections(context.Background(), u)
		if err != nil || len(conns) != 1 {
			t.Fatalf("%s connections: %+v %v", u, conns, err)
		}
	}
}

// Connect answers and the client hears "starting" while its task is still being
// provisioned: nothing waits for the task.
func TestStack_Connect_ReturnsBeforeTheTask(t *testing.T) {
	s := apps.Get(t)
	s.ECS.SetLaunchDelay(time.Hour)
	defer s.ECS.SetLaunchDelay(launchDelay)
	const user = "user_slowtask"
	c := s.Dial(t, user)
	if f := c.NextFrame(); f.State != frames.Starting {
		t.Fatalf("first frame %+v", f)
	}
	sb, err := s.Store.Get(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if ti := s.Task(t, sb.TaskARN); ti.LastStatus != "PROVISIONING" || ti.Pid != 0 {
		t.Fatalf("task %+v: it must still be provisioning", ti)
	}
}

// Fifty connections of one user at once start exactly one task.
func TestStack_Connect_FiftyConnectsOneTask(t *testing.T) {
	s := apps.Get(t)
	const user, n = "user_fifty", 50
	clients := testkit.DialAll(t, slices.Repeat([]string{user}, n), s.TryDial)
	for i, c := range clients {
		// Late connections may find the sandbox ready already; a connection's notice
		// queued behind the others' may be overtaken by the agent's restoring broadcast.
		if f := c.NextFrame(); f.State != frames.Starting && f.State != frames.Restoring && f.State != frames.Ready {
			t.Fatalf("client %d: first frame %+v", i, f)
		}
	}
	if runs := s.RunTasks(user); len(runs) != 1 {
		t.Fatalf("%d RunTask calls for one user", len(runs))
	}
	conns, err := s.Store.Connections(context.Background(), user)
	if err != nil || len(conns) != n {
		t.Fatalf("%d connection records, %v", len(conns), err)
	}
}

// Frames sent while the sandbox starts wait in the inbox and reach the workload in the
// order they were sent, none lost, before any frame sent once it runs — even frames
// sent while the agent still delivers its inbox — and each inbox item is deleted once
// delivered. API Gateway does not order the invocations of one connection's frames
// (apigw reproduces that by default); sandgate keeps the order in which they reach it,
// so this stack dispatches in order to make that order the sending order.
func TestStack_Message_FramesDuringStartInOrderBeforeNewOnes(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.SequentialDispatch = true
		o.Overrides["MESSAGE_RATE_LIMIT"] = "1000" // the new frames come all at once
	})
	// The task stays PENDING until released: the sandbox is surely still starting.
	release := s.ECS.HoldLaunches()
	defer release()
	const user, queued, fresh = "user_order", 100, 20
	ctx := context.Background()
	c := s.Dial(t, user)
	if f := c.NextFrame(); f.State != frames.Starting {
		t.Fatalf("first frame %+v", f)
	}
	var want []string
	for i := range queued {
		f := fmt.Sprintf("inbox-%03d", i)
		c.Send(f)
		want = append(want, f)
	}
	// Every frame was queued while the sandbox was starting, none delivered directly.
	s.Queued(t, user, queued, reply)
	if sb, err := s.Store.Get(ctx, user); err != nil || sb.State != state.Starting {
		t.Fatalf("record %+v, %v: want STARTING while the task is held", sb, err)
	}
	release()
	s.Running(t, user, coldStart)
	for i := range fresh {
		f := fmt.Sprintf("new-%03d", i)
		c.Send(f)
		want = append(want, f)
	}
	var got []string
	for len(got) < len(want) {
		got = append(got, c.Next(reply, "echo", func(f string) bool {
			return strings.HasPrefix(f, "inbox-") || strings.HasPrefix(f, "new-")
		}))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("echo order:\n got %q\nwant %q", got, want)
	}
	c.Status(frames.Ready, reply)
	// The agent deletes each inbox item once written to the workload; the deletes trail
	// the echoes.
	s.Queued(t, user, 0, reply)
	if items, err := s.Store.Inbox(ctx, user); err != nil || len(items) != 0 {
		t.Fatalf("inbox not drained: %d items, %v", len(items), err)
	}
}

// A user over the message rate limit hears rate_limited for the frames refused, and
// every frame is either echoed or refused; another user is unaffected.
func TestStack_Message_RateLimitedUserOnly(t *testing.T) {
	s := apps.Get(t)
	fast, calm := s.Dial(t, "user_fast"), s.Dial(t, "user_calm")
	fast.Status(frames.Ready, coldStart)
	calm.Status(frames.Ready, coldStart)
	const n = 8 * rateLimit
	for i := range n {
		fast.Send(fmt.Sprintf("burst-%02d", i))
	}
	// The burst gets through; the rest is refused, and its sender hears rate_limited
	// (once a second, not once per frame: each answer is a post).
	echoed, limited := 0, 0
	for echoed < 2*rateLimit || limited == 0 {
		f := fast.Next(reply, "echo or error", testkit.Any)
		if fr, ok := testkit.Platform(f); ok {
			if fr.Type == frames.TypeError && fr.Reason == frames.ReasonRateLimited {
				limited++
			} else if fr.Type == frames.TypeError {
				t.Fatalf("unexpected error frame %+v", fr)
			}
			continue
		}
		if strings.HasPrefix(f, "burst-") {
			echoed++
		}
	}
	if echoed >= n {
		t.Fatalf("%d echoed of %d: nothing was refused", echoed, n)
	}
	for i := range 3 {
		calm.Send(fmt.Sprintf("calm-%d", i))
	}
	for i := 0; i < 3; {
		f := calm.Next(reply, "echo", testkit.Any)
		if testkit.IsError(f) {
			t.Fatalf("the calm user heard %s", f)
		}
		if strings.HasPrefix(f, "calm-") {
			i++
		}
	}
}

// Prewarm starts the sandbox once; status reports it without starting anything; a bad
// signature gets a bare 401; a user sees only their own state.
func TestStack_StatusAndPrewarm(t *testing.T) {
	s := apps.Get(t)
	const user = "user_prewarm"
	for i := range 2 {
		code, body := s.HTTP(t, "POST", "/prewarm", s.SignedQuery(t, user))
		if code != 202 || body["userId"] != user || (body["state"] != "STARTING" && body["state"] != "RUNNING") {
			t.Fatalf("prewarm %d: %d %v", i, code, body)
		}
	}
	if runs := s.RunTasks(user); len(runs) != 1 {
		t.Fatalf("%d RunTask calls", len(runs))
	}
	code, body := s.HTTP(t, "GET", "/status", s.SignedQuery(t, user))
	if code != 200 || (body["state"] != "STARTING" && body["state"] != "RUNNING") || body["queued"] != 0.0 {
		t.Fatalf("status %d %v", code, body)
	}
	code, body = s.HTTP(t, "GET", "/status", s.SignedQuery(t, "user_neverseen"))
	if code != 200 || body["userId"] != "user_neverseen" || body["state"] != "STOPPED" || len(s.RunTasks("user_neverseen")) != 0 {
		t.Fatalf("status of a new user %d %v", code, body)
	}
	tampered := strings.Replace(s.SignedQuery(t, user), "userId="+user, "userId=user_neverseen", 1)
	for _, r := range []struct{ method, path string }{{"GET", "/status"}, {"POST", "/prewarm"}} {
		if code, body := s.HTTP(t, r.method, r.path, tampered); code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
			t.Fatalf("%s tampered: %d %v", r.path, code, body)
		}
	}
}

// Cleanup through its bootstrap: a dead sandbox is reaped; an inactive user's data is
// deleted, an active user's is not; in DRY_RUN nothing is deleted. It reads the whole
// table, so it runs while no parallel test uses the shared stack.
func TestStack_Cleanup_ReapAndPurge(t *testing.T) {
	s := apps.Get(t)
	ctx := context.Background()
	// Users who stopped two days ago (retention is one day here) and one who stopped now.
	clock := testkit.NewClock()
	clock.Advance(-48 * time.Hour)
	past := state.New(dynamodb.NewFromConfig(s.AWS), s.Table)
	past.Now = clock.Now
	for _, u := range []string{"user_gone", "user_dryrun"} {
		stoppedUser(t, past, u)
	}
	stoppedUser(t, s.Store, "user_active")
	for _, u := range []string{"user_gone", "user_dryrun", "user_active"} {
		putFiles(t, s, u, 3)
	}

	// DRY_RUN: the same bootstrap with DRY_RUN=true reports and deletes nothing.
	dry := cleanupFunction(t, s, "CleanupDryRun", map[string]string{"DRY_RUN": "true"})
	sum := invokeCleanup(t, s, dry)
	if !sum.DryRun || sum.WouldPurge < 2 || sum.Purged != 0 {
		t.Fatalf("dry run %+v", sum)
	}
	for _, u := range []string{"user_gone", "user_dryrun", "user_active"} {
		if n := len(s.Keys(t, taskenv.UserPrefix(u))); n != 3 {
			t.Fatalf("dry run left %d of %s's 3 keys", n, u)
		}
	}

	// Keep user_dryrun active from now on, to tell the real run's choice apart.
	stoppedUser(t, s.Store, "user_dryrun")
	// A sandbox whose holder died: its start lease has already expired.
	dying := state.New(dynamodb.NewFromConfig(s.AWS), s.Table)
	dying.StartTTL = time.Millisecond
	if _, err := dying.Acquire(ctx, "user_dead"); err != nil {
		t.Fatal(err)
	}
	sum = invokeCleanup(t, s, "CleanupFunction")
	if sum.DryRun || sum.Reaped < 1 || sum.Purged < 1 {
		t.Fatalf("cleanup %+v", sum)
	}
	if sb, err := s.Store.Get(ctx, "user_dead"); err != nil || sb.State != state.Stopped || sb.Reason != state.ReasonExpired {
		t.Fatalf("dead sandbox %+v, %v", sb, err)
	}
	if n := len(s.Keys(t, taskenv.UserPrefix("user_gone"))); n != 0 {
		t.Fatalf("%d keys of the inactive user left", n)
	}
	for _, u := range []string{"user_dryrun", "user_active"} {
		if n := len(s.Keys(t, taskenv.UserPrefix(u))); n != 3 {
			t.Fatalf("%s lost data: %d keys left", u, n)
		}
	}
}

func stoppedUser(t *testing.T, s *state.Store, user string) {
	t.Helper()
	ctx := context.Background()
	l, err := s.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	// Its (pretend) task has stopped too: the slot is back.
	if _, err := s.TaskStopped(ctx, state.TaskRef{UserID: user, Generation: l.Generation, Token: l.Token}, "test: task stopped"); err != nil {
		t.Fatal(err)
	}
}

func putFiles(t *testing.T, s *testkit.Stack, user string, n int) {
	t.Helper()
	b := s.Objects()
	for i := range n {
		body := []byte(fmt.Sprintf("%s file %d", user, i))
		if _, err := b.Put(context.Background(), objsync.PutInput{Key: fmt.Sprintf("%sfiles/f%d", taskenv.UserPrefix(user), i),
			Body: bytes.NewReader(body), Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
	}
}

// cleanupFunction registers the Cleanup bootstrap once more under name, with its
// template environment plus over.
func cleanupFunction(t *testing.T, s *testkit.Stack, name string, over map[string]string) string {
	t.Helper()
	f := s.Template.Functions["CleanupFunction"]
	env := map[string]string{}
	for k, v := range f.Environment {
		env[k] = v
	}
	env["MANAGEMENT_ENDPOINT"] = s.Gateway.ManagementEndpoint()
	for k, v := range over {
		env[k] = v
	}
	if err := s.Runtime.Add(lambdart.Function{Name: name, Path: filepath.Join(testkit.Binaries(t).Dir, f.Name, "bootstrap"),
		Timeout: f.Timeout, MemoryMB: f.MemorySize, Env: env, Role: f.Role, LogGroup: f.LogGroup, InVPC: f.InVPC}); err != nil {
		t.Fatal(err)
	}
	return name
}

func invokeCleanup(t *testing.T, s *testkit.Stack, name string) cleanup.Summary {
	t.Helper()
	out, err := s.Runtime.Invoke(context.Background(), s.Name(name), []byte(`{}`))
	if err != nil {
		t.Fatalf("invoke %s: %v", name, err)
	}
	var sum cleanup.Summary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	return sum
}

// event reads a sample event of events/.
func event(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testkit.Binaries(t).Root, "events", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The sample events run through their functions' bootstraps: each has the shape its
// function expects (the signed samples are past their expiry, so status and prewarm
// refuse them). Cleanup reads the whole table, so this runs while no parallel test uses
// the shared stack.
func TestEvents_SamplesRunThroughTheirFunctions(t *testing.T) {
	s := apps.Get(t)
	for _, c := range []struct {
		fn, file string
		status   int
	}{
		{"ConnectFunction", "connect.json", 200},
		{"MessageFunction", "message.json", 200},
		{"DisconnectFunction", "disconnect.json", 200},
		{"StatusFunction", "status.json", 401},
		{"PrewarmFunction", "prewarm.json", 401},
		// Their callers are another account's roles: refused.
		{"VendFunction", "vend.json", 403},
		{"RelayFunction", "relay.json", 403},
		// Recorded long ago, and this stack holds no webhook secret: not verified.
		{"WebhookFunction", "webhook.json", 503},
	} {
		out, err := s.Runtime.Invoke(context.Background(), s.Name(c.fn), event(t, c.file))
		if err != nil {
			t.Fatalf("%s %s: %v", c.fn, c.file, err)
		}
		var resp struct{ StatusCode int }
		if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode != c.status {
			t.Fatalf("%s %s: %s, want status %d", c.fn, c.file, out, c.status)
		}
	}
	out, err := s.Runtime.Invoke(context.Background(), s.Name("CleanupFunction"), event(t, "cleanup.json"))
	var sum cleanup.Summary
	if err != nil || json.Unmarshal(out, &sum) != nil {
		t.Fatalf("cleanup: %s, %v", out, err)
	}
}

// Events without an authorized user are refused by each route's bootstrap, with
// nothing written.
func TestStack_BadEvents_RefusedWithoutWrites(t *testing.T) {
	s := apps.Get(t)
	before := s.TableKeys(t)
	for fn, file := range map[string]string{
		"ConnectFunction": "connect.json", "MessageFunction": "message.json", "DisconnectFunction": "disconnect.json",
	} {
		var ev events.APIGatewayWebsocketProxyRequest
		if err := json.Unmarshal(event(t, file), &ev); err != nil {
			t.Fatal(err)
		}
		ev.RequestContext.Authorizer = nil
		ev.RequestContext.ConnectionID = "bad-event-" + fn
		ev.QueryStringParameters = map[string]string{"userId": "user_intruder"}
		ev.Body = `{"userId":"user_intruder"}`
		payload, _ := json.Marshal(ev)
		out, err := s.Runtime.Invoke(context.Background(), s.Name(fn), payload)
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		var resp struct{ StatusCode int }
		if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode != 500 {
			t.Fatalf("%s: %s, want 500", fn, out)
		}
	}
	for k := range s.TableKeys(t) {
		if !before[k] && (strings.Contains(k, "intruder") || strings.Contains(k, "bad-event")) {
			t.Fatalf("a refused event wrote %s", k)
		}
	}
	if len(s.RunTasks("user_intruder")) != 0 {
		t.Fatal("a refused event started a sandbox")
	}
}

// Frames sent while the sandbox stops (here: its task is stopped, and its final sync
// is held up) wait in the inbox; a restart notice starts a new sandbox once the old
// one has stopped, which restores the user's files and delivers the frames in order —
// a note sent during the stop is saved by the successor. Storage is held for every
// sandbox of the shared stack, so this runs while no parallel test uses it.
func TestStack_Message_StoppingSandboxRestarts(t *testing.T) {
	s := apps.Get(t)
	const user = "user_restart"
	ctx := context.Background()
	c := s.DialReady(t, user, coldStart)
	sb := s.Running(t, user, reply)
	// Hold every storage request, so the stop's final sync keeps the sandbox STOPPING.
	if err := s.S3.Faults.Inject(s3local.Fault{Latency: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	clear := func() { once.Do(s.S3.Faults.Clear) }
	defer clear()
	c.Note("last words", reply)
	s.StopTask(t, sb.TaskARN)
	c.Status(frames.Stopping, reply)
	c.Send("after-1")
	c.Send(testkit.NoteFrame("during the stop"))
	c.Send("after-2")
	// The frames are queued for the next sandbox before the old one may finish.
	s.Queued(t, user, 3, reply)
	if cur, _ := s.Store.Get(ctx, user); cur == nil || cur.State != state.Stopping {
		t.Fatalf("record %+v: want STOPPING while the final sync is held", cur)
	}
	clear()
	var got []string
	for len(got) < 2 {
		got = append(got, c.Next(coldStart, "echo", func(f string) bool { return strings.HasPrefix(f, "after-") }))
	}
	if got[0] != "after-1" || got[1] != "after-2" {
		t.Fatalf("echoes %q", got)
	}
	c.JSONFrame("note.saved", reply)
	wantNotes(t, c, "last words", "during the stop")
	now, err := s.Store.Get(ctx, user)
	if err != nil || now.Generation != sb.Generation+1 || len(s.RunTasks(user)) != 2 {
		t.Fatalf("record %+v, %v, %d RunTask calls", now, err, len(s.RunTasks(user)))
	}
}

// A sandbox stopped while the user is busy (SIGTERM: a Spot interruption, a deploy)
// loses nothing: every note acknowledged and every file the workload wrote before the
// stop is in the bucket after a clean exit — saved by the final sync alone, as the
// periodic one waits an hour — and the next sandbox restores them byte for byte.
func TestStack_SIGTERM_NothingLostAndRestored(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Overrides["SYNC_INTERVAL"] = "1h"
		o.Overrides["SLEEP_AFTER"] = "10m"
	})
	const user = "user_term"
	ctx := context.Background()
	c := s.DialReady(t, user, coldStart)
	sb := s.Running(t, user, reply)
	blob := randomBytes(t, 300<<10)
	writeFile(t, s.Workspace(t, sb.TaskARN), "data/blob.bin", blob)
	var saved []string
	for i := range 5 {
		text := fmt.Sprintf("note %d", i)
		c.Note(text, reply)
		saved = append(saved, text)
	}

	s.StopTask(t, sb.TaskARN)
	c.Status(frames.Stopping, reply)
	if code := s.ExitCode(t, sb.TaskARN, coldStart); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	rec, err := s.Store.Get(ctx, user)
	if err != nil || rec.State != state.Stopped || rec.Reason != state.ReasonStopped {
		t.Fatalf("record after stop: %+v, %v", rec, err)
	}
	files := taskenv.UserPrefix(user) + objsync.FilesDir
	var stored []string
	for _, k := range s.Keys(t, files+"notes/") {
		stored = append(stored, strings.TrimSuffix(string(s.Object(t, user, strings.TrimPrefix(k, files))), "\n"))
	}
	if slices.Sort(stored); !slices.Equal(stored, saved) {
		t.Fatalf("stored notes %q, want %q", stored, saved)
	}
	if got := s.Object(t, user, "data/blob.bin"); !bytes.Equal(got, blob) {
		t.Fatalf("stored blob differs: %d bytes, want %d", len(got), len(blob))
	}

	// The next frame starts a new sandbox, which restores both.
	c.Send(`{"type":"notes"}`)
	c.Status(frames.Ready, coldStart)
	if n := testkit.NotesOf(c.JSONFrame("notes", reply)); !slices.Equal(n, saved) {
		t.Fatalf("restored notes %q, want %q", n, saved)
	}
	next := s.Running(t, user, reply)
	b, err := os.ReadFile(filepath.Join(s.Workspace(t, next.TaskARN), "data", "blob.bin"))
	if err != nil || !bytes.Equal(b, blob) {
		t.Fatalf("restored blob: %d bytes, %v", len(b), err)
	}
}

// After kill -9 (no final sync, no release), every file written before the last
// completed sync began is stored intact; only what came after it can be lost, and
// syncs run every SYNC_INTERVAL unasked, so the loss is bounded by one interval. The
// record names the killed sandbox until its lease runs out; then the next connect
// takes over, and the new sandbox restores what was stored byte for byte.
func TestStack_Kill9_LossBoundedThenReplacedAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	// LEASE_TTL 15 s, SYNC_INTERVAL 1 s; no idle stop may race the kill.
	s := testkit.Start(t, noIdleStop)
	const user = "user_kill"
	c, sb := withSyncedNote(t, s, user, "synced before the kill")
	ws := s.Workspace(t, sb.TaskARN)

	type file struct {
		name string
		data []byte
		at   time.Time
	}
	var files []file
	for i := range 40 {
		f := file{name: fmt.Sprintf("f/%03d.bin", i), data: randomBytes(t, 1000+i)}
		writeFile(t, ws, f.name, f.data)
		info, err := os.Stat(filepath.Join(ws, f.name))
		if err != nil {
			t.Fatal(err)
		}
		f.at = info.ModTime()
		files = append(files, f)
		time.Sleep(50 * time.Millisecond) // the writes span two sync intervals
	}
	// A sync that began while the files were being written, with nobody asking for one:
	// its marker is newer than the first file (markers carry when a sync began reading,
	// less a second of slack for coarse file timestamps).
	testkit.Eventually(t, reply, func() bool {
		m := s.Marker(t, user)
		return m != nil && m.Time.After(files[0].at)
	}, func() string {
		return "no sync began after the writes started: syncs are not running every SYNC_INTERVAL"
	})
	c.Close()
	if err := syscall.Kill(s.TaskPid(t, sb.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := s.ExitCode(t, sb.TaskARN, reply); code != 137 {
		t.Fatalf("exit code %d, want 137 (SIGKILL)", code)
	}
	m := s.Marker(t, user)
	stored := 0
	for _, f := range files {
		got := s.Object(t, user, f.name)
		switch {
		case f.at.Before(m.Time) && !bytes.Equal(got, f.data):
			t.Errorf("%s, written %s before the last sync began, is not stored intact", f.name, m.Time.Sub(f.at))
		case got != nil && !bytes.Equal(got, f.data):
			t.Errorf("%s stored with other bytes", f.name)
		case got != nil:
			stored++
		}
	}
	if stored == 0 {
		t.Fatal("nothing stored")
	}

	// The record still names the killed sandbox until the lease runs out.
	expired := s.WaitState(t, user, coldStart, "expired", func(x *state.Sandbox) bool { return !x.Live(time.Now()) })
	if expired.TaskARN != sb.TaskARN || expired.Generation != sb.Generation {
		t.Fatalf("record %+v changed before the lease ran out", expired)
	}
	c2 := s.DialReady(t, user, coldStart)
	wantNotes(t, c2, "synced before the kill")
	after := replaced(t, s, user, sb)
	if live := s.Capacity(t); live != 1 {
		t.Fatalf("capacity = %d after a takeover, want 1", live)
	}
	for _, f := range files {
		want := s.Object(t, user, f.name)
		if want == nil {
			continue
		}
		got, err := os.ReadFile(filepath.Join(s.Workspace(t, after.TaskARN), f.name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not restored byte for byte: %v", f.name, err)
		}
	}
}
