package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// The tests in this file run the agent as a task of the shared stack and play the
// functions themselves (see agentEnv).

// An agent paused past its lease while another caller takes over writes nothing once
// it resumes (no upload, no DynamoDB write, no frame) and exits non-zero.
func TestAgent_SIGSTOP_PastLease_WritesNothingAfterResume(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, timings{"SYNC_INTERVAL": "1s", "LEASE_TTL": leaseTTL.String()})
	sb, cl := e.ready(e.user("pause"))
	user := sb.user
	workload := workloadPids(sb.workspace())
	if len(workload) == 0 {
		t.Fatal("no workload process found")
	}

	pid := e.s.TaskPid(t, sb.arn)
	sb.signal(syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // a stopped process would outlive SIGTERM
	sb.write("written-while-paused.txt", []byte("must not be uploaded by the paused agent"))
	var rec *state.Sandbox
	testkit.Eventually(t, 4*leaseTTL, func() bool {
		var err error
		rec, err = e.s.Store.Get(context.Background(), user)
		return err == nil && time.Now().After(rec.LeaseDeadline)
	}, func() string { return "lease never ran out" })
	l, err := e.s.Store.Acquire(context.Background(), user)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	taken, _ := e.s.Store.Get(context.Background(), user)
	// Whatever was posted before the pause has long arrived; from here on, nothing may.
	before := len(cl.Pending())
	resumed := time.Now()
	sb.signal(syscall.SIGCONT)

	if code := sb.exitCode(); code == 0 {
		t.Fatal("exit code 0 after losing the lease")
	}
	if w := e.s3.Writes(resumed); len(w) > 0 {
		t.Errorf("S3 writes after resuming: %v", w)
	}
	if w := e.ddb.Writes(resumed); len(w) > 0 {
		t.Errorf("DynamoDB writes after resuming: %v", w)
	}
	now, _ := e.s.Store.Get(context.Background(), user)
	if now.Version != taken.Version || now.LeaseToken != l.Token {
		t.Errorf("record changed after the takeover: %+v", now)
	}
	if got := e.s.Object(t, user, "written-while-paused.txt"); got != nil {
		t.Error("the paused agent uploaded after losing its lease")
	}
	if p := cl.Pending(); len(p) > before {
		t.Errorf("client got %q after the agent resumed", p[before:])
	}
	for _, pid := range workload {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("workload %d survived its agent", pid)
		}
	}
}

// Each connection's frames reach the workload in the order they were accepted, while
// several connections deliver at once; each reply reaches its own client only.
func TestAgent_Deliver_OrderPerConnectionAndRepliesToTheirClient(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	user, other := e.user("order"), e.user("other")
	sb := e.start(user)
	var clients []conn
	for range 4 {
		clients = append(clients, e.connect(user))
	}
	bystander := e.connect(other)
	target := sb.target()
	for _, cl := range clients {
		cl.JSONFrame("hello", coldStart)
	}
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Go(func() {
			for j := range 50 {
				if err := e.api.Deliver(context.Background(), target, cl.id, fmt.Appendf(nil, "c%d-%03d", i, j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, cl := range clients {
		var got []string
		for len(got) < 50 {
			f := cl.Next(reply, "echo", func(f string) bool { return !frames.IsPlatform([]byte(f)) && !strings.HasPrefix(f, "{") })
			if !strings.HasPrefix(f, fmt.Sprintf("c%d-", i)) {
				t.Fatalf("client %d got another connection's reply %q", i, f)
			}
			got = append(got, f)
		}
		for j, f := range got {
			if want := fmt.Sprintf("c%d-%03d", i, j); f != want {
				t.Fatalf("client %d: frame %d is %q, want %q", i, j, f, want)
			}
		}
	}
	if p := bystander.Pending(); len(p) > 0 {
		t.Fatalf("another user's client got %q", p)
	}
}

// Requests without the gateway token, with another sandbox's token, or naming another
// user are refused; health needs no token.
func TestAgent_API_RefusesWithoutTheSandboxsToken(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	a, b := e.user("a"), e.user("b")
	sa, sbx := e.start(a), e.start(b)
	cl := e.connect(a)
	ta, tb := sa.target(), sbx.target()
	ctx := context.Background()
	for name, tgt := range map[string]agentapi.Target{
		"no token":              {Endpoint: ta.Endpoint, UserID: a},
		"another sandbox token": {Endpoint: ta.Endpoint, Token: tb.Token, UserID: a},
		"another's token+user":  {Endpoint: ta.Endpoint, Token: tb.Token, UserID: b},
		"another user":          {Endpoint: ta.Endpoint, Token: ta.Token, UserID: b},
		"token prefix":          {Endpoint: ta.Endpoint, Token: ta.Token[:len(ta.Token)-1], UserID: a},
	} {
		if err := e.api.Deliver(ctx, tgt, cl.id, []byte("x")); !errors.Is(err, agentapi.ErrUnauthorized) {
			t.Errorf("%s: Deliver = %v, want ErrUnauthorized", name, err)
		}
		if err := e.api.Close(ctx, tgt, cl.id); !errors.Is(err, agentapi.ErrUnauthorized) {
			t.Errorf("%s: Close = %v, want ErrUnauthorized", name, err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, ta.Endpoint+"/v1/connections/"+cl.id+"/frames", strings.NewReader("x"))
	req.Header.Set("Authorization", "Basic "+ta.Token)
	req.Header.Set(agentapi.HeaderUser, a)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("non-bearer scheme: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(ta.Endpoint + agentapi.HealthPath)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := e.api.Deliver(ctx, ta, cl.id, []byte("with the right token")); err != nil {
		t.Fatalf("authorised Deliver: %v", err)
	}
	cl.Next(reply, "echo", testkit.Is("with the right token"))
}

// The user's clients see restoring (with progress), ready and stopping, in that order;
// another user's client sees none of it.
func TestAgent_StatusFrames_ReachTheUsersClients(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	user, other := e.user("status"), e.user("other")
	seed(t, e.s, user, map[string][]byte{"a.txt": []byte("a"), "b/c.txt": []byte("bc"), "d.bin": randomBytes(t, 5000)})
	c1, c2 := e.connect(user), e.connect(user)
	bystander := e.connect(other)
	sb := e.start(user)
	seen := map[conn][]string{}
	for _, cl := range []conn{c1, c2} {
		seen[cl] = cl.Until(coldStart, "ready", testkit.IsStatus(frames.Ready))
	}
	sb.stop()
	for _, cl := range []conn{c1, c2} {
		seen := append(seen[cl], cl.Until(reply, "stopping", testkit.IsStatus(frames.Stopping))...)
		var states []string
		var last *frames.Progress
		for _, f := range seen {
			// Receipts (saved) come whenever a sync stores something: not a step.
			if fr, ok := testkit.Platform(f); ok && fr.Type == frames.TypeStatus && fr.State != frames.Saved {
				states = append(states, fr.State)
				if fr.State == frames.Restoring {
					last = fr.Progress
				}
			}
		}
		if len(states) < 3 || states[0] != frames.Restoring || states[len(states)-2] != frames.Ready || states[len(states)-1] != frames.Stopping {
			t.Fatalf("status frames %q", states)
		}
		if last == nil || last.Files != 3 || last.TotalFiles != 3 || last.Bytes != 5003 || last.TotalBytes != 5003 {
			t.Fatalf("last restoring progress %+v, want 3 files of 5003 bytes", last)
		}
	}
	if code := sb.exitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if p := bystander.Pending(); len(p) > 0 {
		t.Fatalf("another user's client got %q", p)
	}
}

// seed stores files under the user's prefix as an earlier sandbox would have.
func seed(t *testing.T, s *testkit.Stack, user string, files map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	for rel, data := range files {
		writeFile(t, filepath.Join(dir, "files"), rel, data)
	}
	sy, err := objsync.New(s.Objects(), taskenv.UserPrefix(user), filepath.Join(dir, "files"), filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	sy.Log = slog.New(slog.DiscardHandler)
	if _, err := sy.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// staleStore writes as a caller an hour behind: its records are past the grace a new
// connection gets.
func staleStore(s *testkit.Stack) *state.Store {
	clock := testkit.NewClock()
	clock.Advance(-time.Hour)
	old := state.New(dynamodb.NewFromConfig(s.AWS), s.Table)
	old.Now = clock.Now
	return old
}

// A reply to a connection that is gone (410) removes its record; the user's live
// connection keeps its own.
func TestAgent_Gone_RemovesTheRecord(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	user := e.user("gone")
	sb := e.start(user)
	live := e.connect(user)
	target := sb.target()
	ctx := context.Background()
	// A record whose $disconnect was lost, written long ago (past the $connect grace).
	const ghost = "Z2hvc3QtY29ubmVjdA="
	if _, err := staleStore(e.s).AddConnection(ctx, user, ghost); err != nil {
		t.Fatal(err)
	}
	if err := e.api.Deliver(ctx, target, ghost, []byte("echo me to nobody")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, reply, func() bool {
		conns, err := e.s.Store.Connections(ctx, user)
		return err == nil && len(conns) == 1 && conns[0].ConnectionID == live.id
	}, func() string { return "the gone connection's record was not removed" })
	sb.deliver(live, "still here")
	live.Next(reply, "echo", testkit.Is("still here"))
}

// Over MESSAGE_RATE_LIMIT frames per second (burst twice that) the API answers
// rate_limited; frames within the limit are delivered.
func TestAgent_Deliver_RateLimited(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, timings{"MESSAGE_RATE_LIMIT": "2"})
	user := e.user("rate")
	sb := e.start(user)
	cl := e.connect(user)
	target := sb.target()
	start := time.Now()
	var accepted, limited int
	// Forty frames: only a machine that took over 18 s to deliver them would refill
	// the bucket for every one.
	for i := range 40 {
		err := e.api.Deliver(context.Background(), target, cl.id, fmt.Appendf(nil, "r%02d", i))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, agentapi.ErrRateLimited):
			limited++
		default:
			t.Fatal(err)
		}
	}
	// The bound follows from the time the deliveries really took.
	refill := int(2*time.Since(start).Seconds()) + 1
	if accepted < 4 || accepted > 4+refill || limited == 0 {
		t.Fatalf("accepted %d, limited %d: want the burst of 4 (+%d refilled) and the rest refused", accepted, limited, refill)
	}
}

// With no frame for SLEEP_AFTER the sandbox stops itself once no connection is live:
// a record whose $disconnect was lost does not keep it up (it is removed), a live
// client does until it leaves.
func TestAgent_Idle_StopsWhenNoConnectionIsLive(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, timings{"SLEEP_AFTER": "1s", "SYNC_INTERVAL": "1h"})
	user := e.user("idle")
	cl := e.connect(user)
	sb := e.start(user)
	sb.waitState(state.Running)
	ctx := context.Background()
	const ghost = "c3RhbGUtcmVjb3Jk"
	if _, err := staleStore(e.s).AddConnection(ctx, user, ghost); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, reply, func() bool {
		conns, err := e.s.Store.Connections(ctx, user)
		return err == nil && len(conns) == 1
	}, func() string { return "the stale record was never checked" })
	if rec, _ := e.s.Store.Get(ctx, user); rec.State != state.Running {
		t.Fatalf("stopped while a client was connected: %s", rec.State)
	}
	sb.write("kept.txt", []byte("synced by the idle stop"))
	cl.Close()
	if code := sb.exitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if rec, _ := e.s.Store.Get(ctx, user); rec.State != state.Stopped {
		t.Fatalf("record %s after the idle stop", rec.State)
	}
	if got := e.s.Object(t, user, "kept.txt"); string(got) != "synced by the idle stop" {
		t.Fatalf("stored %q", got)
	}
}

// At MAX_LIFETIME the sandbox stops even with a busy client, telling it so.
func TestAgent_MaxLifetime_Stops(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, timings{"MAX_LIFETIME": "3s"})
	user := e.user("life")
	cl := e.connect(user)
	sb := e.start(user)
	// A lifetime that ends during the start stops the sandbox once it is ready.
	cl.Status(frames.Ready, coldStart)
	cl.Status(frames.Stopping, coldStart)
	if code := sb.exitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// When another caller holds the lease now, the agent stops at its next heartbeat
// without a final sync, a status frame or any other write, and exits non-zero.
func TestAgent_LeaseTakenOver_ExitsWithoutWriting(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, timings{"SYNC_INTERVAL": "1h", "LEASE_TTL": leaseTTL.String()})
	sb, cl := e.ready(e.user("taken"))
	user := sb.user
	ctx := context.Background()
	// The lease changes hands (here by its own token's release and a new start).
	if err := e.s.Store.Release(ctx, sb.lease, "test takes over"); err != nil {
		t.Fatal(err)
	}
	l, err := e.s.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	taken := time.Now()
	sb.write("after-takeover.txt", []byte("must not be synced"))
	if code := sb.exitCode(); code == 0 {
		t.Fatal("exit code 0 after losing the lease")
	}
	if w := e.s3.Writes(taken); len(w) > 0 {
		t.Errorf("S3 writes after the takeover: %v", w)
	}
	for _, w := range e.ddb.Writes(taken) {
		if w.Op != "UpdateItem" { // the heartbeat that finds the lease gone
			t.Errorf("DynamoDB write after the takeover: %v", w)
		}
	}
	if rec, _ := e.s.Store.Get(ctx, user); rec.LeaseToken != l.Token || rec.State != state.Starting {
		t.Errorf("the new holder's record was changed: %+v", rec)
	}
	for _, f := range cl.Pending() {
		if testkit.IsStatus(frames.Stopping)(f) {
			t.Fatalf("the deposed agent told the client it is stopping")
		}
	}
}

// With DynamoDB unreachable, heartbeats fail; the agent steps down before its lease's
// deadline (so no one can take over while it still writes), writes nothing more, and
// exits non-zero.
func TestAgent_DynamoDBUnreachable_StepsDownBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	// The agent stops writing a sixth of LEASE_TTL before the deadline: 5 s here, more
	// than a loaded machine stalls.
	e := newAgentEnv(t, timings{"SYNC_INTERVAL": "1h", "LEASE_TTL": "30s"})
	user := e.user("cut")
	sb := e.start(user)
	sb.waitState(state.Running)
	e.ddb.Cut(true)
	cut := time.Now()
	sb.write("after-cut.txt", []byte("not synced: the agent steps down"))
	if code := sb.exitCode(); code == 0 {
		t.Fatal("exit code 0 after stepping down")
	}
	e.ddb.Cut(false)
	last, err := e.s.Store.Get(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if w := e.s3.Writes(cut); len(w) > 0 {
		t.Errorf("S3 writes after DynamoDB became unreachable: %v", w)
	}
	// RUNNING as the agent last wrote it, or ended by its task's end (the stop event:
	// not the agent's write).
	if last.State != state.Running && !strings.HasPrefix(last.Reason, "task stopped") {
		t.Errorf("record %s (%q): the agent wrote despite stepping down", last.State, last.Reason)
	}
	// It stepped down before the deadline its last renewal set: after that, another
	// caller may take the lease over.
	lost, ok := sb.leaseLost()
	if !ok || !lost.Before(last.LeaseDeadline) {
		t.Errorf("stepped down at %s (logged: %v), lease deadline %s", lost, ok, last.LeaseDeadline)
	}
}

// A crashed workload is restarted; clients are told, and the next frame is served.
func TestAgent_WorkloadCrash_Restarted(t *testing.T) {
	t.Parallel()
	// The workload runs under a uid of its own: it needs a copy of this binary it can
	// reach (go test's build directory is private), and its mode reaches it only
	// declared in WORKLOAD_ENV.
	e := newAgentEnv(t, timings{"SANDBOX_COMMAND": reachableCopyOfSelf(t),
		testkit.EnvWorkload: testkit.WorkloadCrashy, "WORKLOAD_ENV": testkit.EnvWorkload})
	user := e.user("crash")
	cl := e.connect(user)
	sb := e.start(user)
	sb.waitState(state.Running)
	sb.deliver(cl, "before the crash")
	cl.Next(coldStart, "echo", testkit.Is("before the crash"))
	sb.deliver(cl, "crash")
	cl.Next(reply, "unavailable", testkit.IsErrorReason(frames.ReasonUnavailable))
	cl.JSONFrame("hello", reply) // the upstream was redialled
	sb.deliver(cl, "after the restart")
	cl.Next(reply, "echo", testkit.Is("after the restart"))
}

// reachableCopyOfSelf copies the test binary into a directory every uid may search.
func reachableCopyOfSelf(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sandgate-e2e-workload-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(self)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	exe := filepath.Join(dir, filepath.Base(self))
	if err == nil {
		err = os.WriteFile(exe, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// A workload that cannot start fails the start: the client is told, the lease is
// released so the next connection can retry, and the agent exits non-zero.
func TestAgent_WorkloadNeverListens_StartFailed(t *testing.T) {
	t.Parallel()
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Fatal(err)
	}
	e := newAgentEnv(t, timings{"SANDBOX_COMMAND": falseBin})
	user := e.user("nostart")
	cl := e.connect(user)
	sb := e.start(user)
	cl.Next(coldStart, "start_failed", testkit.IsErrorReason(frames.ReasonStartFailed))
	if code := sb.exitCode(); code == 0 {
		t.Fatal("exit code 0 after a failed start")
	}
	rec, err := e.s.Store.Get(context.Background(), user)
	if err != nil || rec.State != state.Stopped || !strings.Contains(rec.Reason, "workload") {
		t.Fatalf("record %+v, %v", rec, err)
	}
	if _, err := e.s.Store.Acquire(context.Background(), user); err != nil {
		t.Fatalf("the next start could not take the lease: %v", err)
	}
}

// A task whose lease token is not the record's (a stale or duplicate launch) exits
// non-zero without writing anything or telling the clients anything.
func TestAgent_NotTheHolder_ExitsWithoutWriting(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	user := e.user("stale")
	cl := e.connect(user)
	ctx := context.Background()
	l, err := e.s.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.s.Store.Get(ctx, user)
	arn, err := e.launcher.Launch(ctx, launcher.Spec{UserID: user, LeaseToken: "stale-" + e.user("token"), Generation: l.Generation})
	if err != nil {
		t.Fatal(err)
	}
	sb := e.task(user, state.Lease{}, arn)
	if code := sb.exitCode(); code == 0 {
		t.Fatal("a task without the lease exited 0")
	}
	if w := e.s3.Writes(time.Time{}); len(w) > 0 {
		t.Errorf("S3 writes: %v", w)
	}
	if w := e.ddb.Writes(time.Time{}); len(w) > 0 {
		t.Errorf("DynamoDB writes: %v", w)
	}
	if after, _ := e.s.Store.Get(ctx, user); after.Version != before.Version {
		t.Errorf("record changed: %+v", after)
	}
	if p := cl.Pending(); len(p) > 0 {
		t.Errorf("client got %q", p)
	}
}

// The health check finds the agent the way the agent finds itself (the task metadata
// endpoint, AGENT_PORT) and reports its health in the exit status.
func TestAgent_Healthcheck_FindsTheAgent(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	bin := testkit.Binaries(t).Agent()
	user := e.user("health")
	sb := e.start(user)
	sb.waitState(state.Running)
	info := sb.info()
	env := []string{"ECS_CONTAINER_METADATA_URI_V4=" + info.MetadataURI, "AGENT_PORT=8080"}
	if out, code := testkit.Run(t, bin, env, "healthcheck"); code != 0 {
		t.Fatalf("healthcheck of a running agent: exit %d\n%s", code, out)
	}
	if out, code := testkit.Run(t, bin, []string{"ECS_CONTAINER_METADATA_URI_V4=" + info.MetadataURI, "AGENT_PORT=8081"}, "healthcheck"); code == 0 {
		t.Fatalf("healthcheck against a port nobody serves passed:\n%s", out)
	}
	if out, code := testkit.Run(t, bin, []string{"AGENT_PORT=8080"}, "healthcheck"); code == 0 || !strings.Contains(out, "ECS_CONTAINER_METADATA_URI_V4") {
		t.Fatalf("healthcheck without the metadata endpoint: exit %d\n%s", code, out)
	}
	sb.stop()
	sb.exitCode()
	if out, code := testkit.Run(t, bin, env, "healthcheck"); code == 0 {
		t.Fatalf("healthcheck of a stopped agent passed:\n%s", out)
	}
}
