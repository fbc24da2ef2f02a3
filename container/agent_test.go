package main_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// workspace is the task's user directory, as the workload sees it.
func (sb *sandbox) workspace() string {
	sb.e.t.Helper()
	info := sb.info()
	if info.DataDir == "" {
		sb.e.t.Fatal("task has no data directory")
	}
	return filepath.Join(info.DataDir, "mnt", "data", "workspace")
}

// write puts a file into the task's workspace, as the workload would.
func (sb *sandbox) write(rel string, data []byte) {
	sb.e.t.Helper()
	p := filepath.Join(sb.workspace(), rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		sb.e.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		sb.e.t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// deliver sends one frame for the client's connection as the Message function does.
func (sb *sandbox) deliver(cl *client, frame string) {
	sb.e.t.Helper()
	if err := sb.e.api.Deliver(context.Background(), sb.target(), cl.id, []byte(frame)); err != nil {
		sb.e.t.Fatalf("deliver %q: %v", frame, err)
	}
}

// note asks the demo workload to save a note and returns the saved file's name.
func (sb *sandbox) note(cl *client, text string) string {
	sb.e.t.Helper()
	frame, _ := json.Marshal(map[string]string{"type": "note", "text": text})
	sb.deliver(cl, string(frame))
	reply := cl.until(10*time.Second, jsonType("note.saved"))
	var m struct{ Name string }
	json.Unmarshal(reply[len(reply)-1], &m)
	return m.Name
}

// A note acknowledged before SIGTERM and a file the workload wrote are in the bucket
// after a clean exit; a fresh sandbox restores both byte for byte. The task runs from
// the template's own task definition (SYNC_INTERVAL 30 s: only the final sync saves).
func TestAgent_SIGTERM_NothingLostAndRestored(t *testing.T) {
	e := newTemplateEnv(t)
	user := e.user("term")
	sb := e.start(user)
	cl := e.connect(user)
	cl.until(20*time.Second, status(frames.Ready))
	blob := randomBytes(t, 300<<10)
	sb.write("data/blob.bin", blob)
	name := sb.note(cl, "written just before SIGTERM")

	sb.stop()
	cl.until(10*time.Second, status(frames.Stopping))
	if code := sb.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	rec, err := shared.Store.Get(context.Background(), user)
	if err != nil || rec.State != state.Stopped || rec.Reason != state.ReasonStopped {
		t.Fatalf("record after stop: %v, %v", rec, err)
	}
	if got := e.object(user, "notes/"+name); string(got) != "written just before SIGTERM\n" {
		t.Fatalf("stored note = %q", got)
	}
	if got := e.object(user, "data/blob.bin"); !bytes.Equal(got, blob) {
		t.Fatalf("stored blob differs: %d bytes, want %d", len(got), len(blob))
	}

	sb2 := e.start(user)
	cl.until(20*time.Second, status(frames.Ready))
	b, err := os.ReadFile(filepath.Join(sb2.workspace(), "data", "blob.bin"))
	if err != nil || !bytes.Equal(b, blob) {
		t.Fatalf("restored blob: %d bytes, %v", len(b), err)
	}
	sb2.deliver(cl, "/notes")
	reply := cl.until(10*time.Second, jsonType("notes"))
	var m struct{ Notes []string }
	json.Unmarshal(reply[len(reply)-1], &m)
	if !slices.Equal(m.Notes, []string{"written just before SIGTERM"}) {
		t.Fatalf("restored notes %q", m.Notes)
	}
}

// After kill -9, every file written before the last completed sync began is stored and
// restored byte for byte; only what came after it can be lost, and syncs run every
// SYNC_INTERVAL, so the loss is bounded by one interval (plus one sync's duration).
func TestAgent_Kill9_LossBoundedBySyncInterval(t *testing.T) {
	e := newEnv(t, timings{"SYNC_INTERVAL": "1s", "LEASE_TTL": "3s"})
	user := e.user("kill")
	sb := e.start(user)
	sb.waitState(state.Running)

	type file struct {
		name string
		data []byte
		at   time.Time
	}
	var files []file
	for i := range 40 {
		f := file{name: fmt.Sprintf("f/%03d.bin", i), data: randomBytes(t, 1000+i)}
		sb.write(f.name, f.data)
		info, err := os.Stat(filepath.Join(sb.workspace(), f.name))
		if err != nil {
			t.Fatal(err)
		}
		f.at = info.ModTime()
		files = append(files, f)
		time.Sleep(50 * time.Millisecond) // the writes span two sync intervals
	}
	sb.signal(syscall.SIGKILL)
	killed := time.Now()
	if code := sb.exitCode(20 * time.Second); code != 137 {
		t.Fatalf("exit code %d, want 137 (SIGKILL)", code)
	}
	m := e.marker(user)
	if m == nil {
		t.Fatal("no sync finished in two seconds of writes")
	}
	if gap := killed.Sub(m.Time); gap > time.Second+5*time.Second {
		t.Errorf("last marker %s before the kill: syncs are not running every SYNC_INTERVAL", gap)
	}
	stored := 0
	for _, f := range files {
		got := e.object(user, f.name)
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

	// The killed sandbox's lease runs out; the next start takes over and restores.
	var l state.Lease
	eventually(t, 10*time.Second, func() bool {
		var err error
		l, err = shared.Store.Acquire(context.Background(), user)
		return err == nil
	}, func() string { return "lease never taken over" })
	sb2 := e.launch(user, l)
	sb2.waitState(state.Running)
	for _, f := range files {
		want := e.object(user, f.name)
		if want == nil {
			continue
		}
		got, err := os.ReadFile(filepath.Join(sb2.workspace(), f.name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not restored byte for byte: %v", f.name, err)
		}
	}
}

// An agent paused past its lease while another caller takes over writes nothing once
// it resumes (no upload, no DynamoDB write, no frame) and exits non-zero.
func TestAgent_SIGSTOP_PastLease_WritesNothingAfterResume(t *testing.T) {
	e := newEnv(t, timings{"SYNC_INTERVAL": "1s", "LEASE_TTL": "3s"})
	user := e.user("pause")
	sb := e.start(user)
	cl := e.connect(user)
	cl.until(20*time.Second, status(frames.Ready))
	workload := workloadPids(sb.workspace())
	if len(workload) == 0 {
		t.Fatal("no workload process found")
	}

	sb.signal(syscall.SIGSTOP)
	sb.write("written-while-paused.txt", []byte("must not be uploaded by the paused agent"))
	var rec *state.Sandbox
	eventually(t, 10*time.Second, func() bool {
		var err error
		rec, err = shared.Store.Get(context.Background(), user)
		return err == nil && time.Now().After(rec.LeaseDeadline)
	}, func() string { return "lease never ran out" })
	l, err := shared.Store.Acquire(context.Background(), user)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	taken, _ := shared.Store.Get(context.Background(), user)
	// Whatever was posted before the pause has long arrived; from here on, nothing may.
	for len(cl.frames) > 0 {
		<-cl.frames
	}
	resumed := time.Now()
	sb.signal(syscall.SIGCONT)

	if code := sb.exitCode(20 * time.Second); code == 0 {
		t.Fatal("exit code 0 after losing the lease")
	}
	if w := e.s3rec.writes(resumed); len(w) > 0 {
		t.Errorf("S3 writes after resuming: %v", w)
	}
	if w := e.ddbrec.writes(resumed); len(w) > 0 {
		t.Errorf("DynamoDB writes after resuming: %v", w)
	}
	now, _ := shared.Store.Get(context.Background(), user)
	if now.Version != taken.Version || now.LeaseToken != l.Token {
		t.Errorf("record changed after the takeover: %+v", now)
	}
	if got := e.object(user, "written-while-paused.txt"); got != nil {
		t.Error("the paused agent uploaded after losing its lease")
	}
	select {
	case f, ok := <-cl.frames:
		if ok {
			t.Errorf("client got %s after the agent resumed", f)
		}
	default:
	}
	for _, pid := range workload {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("workload %d survived its agent", pid)
		}
	}
}

// workloadPids returns the processes whose working directory is the workspace.
func workloadPids(workspace string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == workspace {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Frames queued in the inbox while the sandbox starts reach the workload in order,
// before any frame sent after it became ready.
func TestAgent_Inbox_QueuedFramesInOrderBeforeNewOnes(t *testing.T) {
	e := newEnv(t, nil)
	user := e.user("inbox")
	cl := e.connect(user)
	ctx := context.Background()
	l, err := shared.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 100 {
		f := fmt.Sprintf("inbox-%03d", i)
		if _, err := shared.Store.Enqueue(ctx, user, cl.id, []byte(f)); err != nil {
			t.Fatal(err)
		}
		want = append(want, f)
	}
	sb := e.launch(user, l)
	target := sb.target() // as soon as it is RUNNING
	for i := range 20 {
		f := fmt.Sprintf("new-%03d", i)
		if err := e.api.Deliver(ctx, target, cl.id, []byte(f)); err != nil {
			t.Fatal(err)
		}
		want = append(want, f)
	}
	var got []string
	for len(got) < len(want) {
		f := string(cl.next(10 * time.Second))
		if strings.HasPrefix(f, "inbox-") || strings.HasPrefix(f, "new-") {
			got = append(got, f)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("echo order:\n got %q\nwant %q", got, want)
	}
	eventually(t, 10*time.Second, func() bool {
		items, err := shared.Store.Inbox(ctx, user)
		return err == nil && len(items) == 0
	}, func() string { return "delivered inbox items were not acknowledged" })
}

// Each connection's frames reach the workload in the order they were accepted, while
// several connections deliver at once; each reply reaches its own client only.
func TestAgent_Deliver_OrderPerConnectionAndRepliesToTheirClient(t *testing.T) {
	e := newEnv(t, nil)
	user, other := e.user("order"), e.user("other")
	sb := e.start(user)
	var clients []*client
	for range 4 {
		clients = append(clients, e.connect(user))
	}
	bystander := e.connect(other)
	target := sb.target()
	for _, cl := range clients {
		cl.until(20*time.Second, jsonType("hello"))
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
			f := string(cl.next(10 * time.Second))
			if frames.IsPlatform([]byte(f)) || strings.HasPrefix(f, "{") {
				continue
			}
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
	select {
	case f := <-bystander.frames:
		t.Fatalf("another user's client got %q", f)
	default:
	}
}

// Requests without the gateway token, with another sandbox's token, or naming another
// user are refused; health needs no token.
func TestAgent_API_RefusesWithoutTheSandboxsToken(t *testing.T) {
	e := newEnv(t, nil)
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
	cl.until(10*time.Second, func(b []byte) bool { return string(b) == "with the right token" })
}

// The user's clients see restoring (with progress), ready and stopping, in that order;
// another user's client sees none of it.
func TestAgent_StatusFrames_ReachTheUsersClients(t *testing.T) {
	e := newEnv(t, nil)
	user, other := e.user("status"), e.user("other")
	seed(t, e, user, map[string][]byte{"a.txt": []byte("a"), "b/c.txt": []byte("bc"), "d.bin": randomBytes(t, 5000)})
	c1, c2 := e.connect(user), e.connect(user)
	bystander := e.connect(other)
	sb := e.start(user)
	seen := map[*client][][]byte{}
	for _, cl := range []*client{c1, c2} {
		seen[cl] = cl.until(20*time.Second, status(frames.Ready))
	}
	sb.stop()
	for _, cl := range []*client{c1, c2} {
		seen := append(seen[cl], cl.until(20*time.Second, status(frames.Stopping))...)
		var states []string
		var last *frames.Progress
		for _, b := range seen {
			var f frames.Frame
			if json.Unmarshal(b, &f) == nil && f.Type == frames.TypeStatus {
				states = append(states, f.State)
				if f.State == frames.Restoring {
					last = f.Progress
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
	if code := sb.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	select {
	case f := <-bystander.frames:
		t.Fatalf("another user's client got %s", f)
	default:
	}
}

// seed stores files under the user's prefix as an earlier sandbox would have.
func seed(t *testing.T, e *env, user string, files map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	for rel, data := range files {
		p := filepath.Join(dir, "files", rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sy, err := objsync.New(e.bucket, "users/"+user+"/", filepath.Join(dir, "files"), filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	sy.Log = slog.New(slog.DiscardHandler)
	if _, err := sy.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A reply to a connection that is gone (410) removes its record; the user's live
// connection keeps its own.
func TestAgent_Gone_RemovesTheRecord(t *testing.T) {
	e := newEnv(t, nil)
	user := e.user("gone")
	sb := e.start(user)
	live := e.connect(user)
	target := sb.target()
	ctx := context.Background()
	// A record whose $disconnect was lost, written long ago (past the $connect grace).
	old := state.New(dynamodb.NewFromConfig(shared.AWS), shared.Table)
	old.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	const ghost = "Z2hvc3QtY29ubmVjdA="
	if _, err := old.AddConnection(ctx, user, ghost); err != nil {
		t.Fatal(err)
	}
	if err := e.api.Deliver(ctx, target, ghost, []byte("echo me to nobody")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool {
		conns, err := shared.Store.Connections(ctx, user)
		return err == nil && len(conns) == 1 && conns[0].ConnectionID == live.id
	}, func() string { return "the gone connection's record was not removed" })
	sb.deliver(live, "still here")
	live.until(10*time.Second, func(b []byte) bool { return string(b) == "still here" })
}

// Over MESSAGE_RATE_LIMIT frames per second (burst twice that) the API answers
// rate_limited; frames within the limit are delivered.
func TestAgent_Deliver_RateLimited(t *testing.T) {
	e := newEnv(t, timings{"MESSAGE_RATE_LIMIT": "2"})
	user := e.user("rate")
	sb := e.start(user)
	cl := e.connect(user)
	target := sb.target()
	start := time.Now()
	var accepted, limited int
	for i := range 12 {
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
	refill := int(2*time.Since(start).Seconds()) + 1
	if accepted < 4 || accepted > 4+refill || limited == 0 {
		t.Fatalf("accepted %d, limited %d: want the burst of 4 (+%d refilled) and the rest refused", accepted, limited, refill)
	}
}

// With no frame for SLEEP_AFTER the sandbox stops itself once no connection is live:
// a record whose $disconnect was lost does not keep it up (it is removed), a live
// client does until it leaves.
func TestAgent_Idle_StopsWhenNoConnectionIsLive(t *testing.T) {
	e := newEnv(t, timings{"SLEEP_AFTER": "1s", "SYNC_INTERVAL": "1h"})
	user := e.user("idle")
	cl := e.connect(user)
	sb := e.start(user)
	sb.waitState(state.Running)
	ctx := context.Background()
	old := state.New(dynamodb.NewFromConfig(shared.AWS), shared.Table)
	old.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	const ghost = "c3RhbGUtcmVjb3Jk"
	if _, err := old.AddConnection(ctx, user, ghost); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() bool {
		conns, err := shared.Store.Connections(ctx, user)
		return err == nil && len(conns) == 1
	}, func() string { return "the stale record was never checked" })
	if rec, _ := shared.Store.Get(ctx, user); rec.State != state.Running {
		t.Fatalf("stopped while a client was connected: %s", rec.State)
	}
	sb.write("kept.txt", []byte("synced by the idle stop"))
	cl.c.Close(1000, "bye")
	if code := sb.exitCode(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if rec, _ := shared.Store.Get(ctx, user); rec.State != state.Stopped {
		t.Fatalf("record %s after the idle stop", rec.State)
	}
	if got := e.object(user, "kept.txt"); string(got) != "synced by the idle stop" {
		t.Fatalf("stored %q", got)
	}
}

// At MAX_LIFETIME the sandbox stops even with a busy client, telling it so.
func TestAgent_MaxLifetime_Stops(t *testing.T) {
	e := newEnv(t, timings{"MAX_LIFETIME": "3s"})
	user := e.user("life")
	cl := e.connect(user)
	sb := e.start(user)
	cl.until(20*time.Second, status(frames.Ready))
	cl.until(20*time.Second, status(frames.Stopping))
	if code := sb.exitCode(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// When another caller holds the lease now, the agent stops at its next heartbeat
// without a final sync, a status frame or any other write, and exits non-zero.
func TestAgent_LeaseTakenOver_ExitsWithoutWriting(t *testing.T) {
	e := newEnv(t, timings{"SYNC_INTERVAL": "1h", "LEASE_TTL": "3s"})
	user := e.user("taken")
	cl := e.connect(user)
	sb := e.start(user)
	cl.until(20*time.Second, status(frames.Ready))
	ctx := context.Background()
	// The lease changes hands (here by its own token's release and a new start).
	if err := shared.Store.Release(ctx, sb.lease, "test takes over"); err != nil {
		t.Fatal(err)
	}
	l, err := shared.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	taken := time.Now()
	sb.write("after-takeover.txt", []byte("must not be synced"))
	if code := sb.exitCode(20 * time.Second); code == 0 {
		t.Fatal("exit code 0 after losing the lease")
	}
	if w := e.s3rec.writes(taken); len(w) > 0 {
		t.Errorf("S3 writes after the takeover: %v", w)
	}
	for _, w := range e.ddbrec.writes(taken) {
		if !strings.HasSuffix(w.op, ".UpdateItem") {
			t.Errorf("DynamoDB write after the takeover: %v", w)
		}
	}
	if rec, _ := shared.Store.Get(ctx, user); rec.LeaseToken != l.Token || rec.State != state.Starting {
		t.Errorf("the new holder's record was changed: %+v", rec)
	}
	for {
		select {
		case f, ok := <-cl.frames:
			if !ok {
				return
			}
			if status(frames.Stopping)(f) {
				t.Fatalf("the deposed agent told the client it is stopping")
			}
			continue
		default:
		}
		break
	}
}

// With DynamoDB unreachable, heartbeats fail; the agent steps down before its lease's
// deadline (so no one can take over while it still writes), writes nothing more, and
// exits non-zero.
func TestAgent_DynamoDBUnreachable_StepsDownBeforeTheDeadline(t *testing.T) {
	e := newEnv(t, timings{"SYNC_INTERVAL": "1h", "LEASE_TTL": "3s"})
	user := e.user("cut")
	sb := e.start(user)
	sb.waitState(state.Running)
	e.ddbrec.cut.Store(true)
	cut := time.Now()
	sb.write("after-cut.txt", []byte("not synced: the agent steps down"))
	code := sb.exitCode(20 * time.Second)
	if code == 0 {
		t.Fatal("exit code 0 after stepping down")
	}
	e.ddbrec.cut.Store(false)
	last, err := shared.Store.Get(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if w := e.s3rec.writes(cut); len(w) > 0 {
		t.Errorf("S3 writes after DynamoDB became unreachable: %v", w)
	}
	if last.State != state.Running {
		t.Errorf("record %s: the agent wrote despite stepping down", last.State)
	}
	// It stepped down before the deadline its last renewal set: after that, another
	// caller may take the lease over.
	lost := sb.logTime("lease lost; stopping without writing")
	if lost.IsZero() || !lost.Before(last.LeaseDeadline) {
		t.Errorf("stepped down at %s, lease deadline %s", lost, last.LeaseDeadline)
	}
}

// A crashed workload is restarted; clients are told, and the next frame is served.
func TestAgent_WorkloadCrash_Restarted(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, timings{"SANDBOX_COMMAND": self, "SANDGATE_TEST_WORKLOAD": "crashy"})
	user := e.user("crash")
	cl := e.connect(user)
	sb := e.start(user)
	sb.waitState(state.Running)
	sb.deliver(cl, "before the crash")
	cl.until(20*time.Second, func(b []byte) bool { return string(b) == "before the crash" })
	sb.deliver(cl, "crash")
	cl.until(10*time.Second, func(b []byte) bool {
		var f frames.Frame
		return json.Unmarshal(b, &f) == nil && f.Type == frames.TypeError && f.Reason == frames.ReasonUnavailable
	})
	cl.until(15*time.Second, jsonType("hello")) // the upstream was redialled
	sb.deliver(cl, "after the restart")
	cl.until(10*time.Second, func(b []byte) bool { return string(b) == "after the restart" })
}

// A workload that cannot start fails the start: the client is told, the lease is
// released so the next connection can retry, and the agent exits non-zero.
func TestAgent_WorkloadNeverListens_StartFailed(t *testing.T) {
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, timings{"SANDBOX_COMMAND": falseBin})
	user := e.user("nostart")
	cl := e.connect(user)
	sb := e.start(user)
	cl.until(20*time.Second, func(b []byte) bool {
		var f frames.Frame
		return json.Unmarshal(b, &f) == nil && f.Type == frames.TypeError && f.Reason == frames.ReasonStartFailed
	})
	if code := sb.exitCode(20 * time.Second); code == 0 {
		t.Fatal("exit code 0 after a failed start")
	}
	rec, err := shared.Store.Get(context.Background(), user)
	if err != nil || rec.State != state.Stopped || !strings.Contains(rec.Reason, "workload") {
		t.Fatalf("record %+v, %v", rec, err)
	}
	if _, err := shared.Store.Acquire(context.Background(), user); err != nil {
		t.Fatalf("the next start could not take the lease: %v", err)
	}
}

// A task whose lease token is not the record's (a stale or duplicate launch) exits
// non-zero without writing anything or telling the clients anything.
func TestAgent_NotTheHolder_ExitsWithoutWriting(t *testing.T) {
	e := newEnv(t, nil)
	user := e.user("stale")
	cl := e.connect(user)
	ctx := context.Background()
	l, err := shared.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := shared.Store.Get(ctx, user)
	arn, err := e.launcher.Launch(ctx, launcher.Spec{UserID: user, LeaseToken: "stale-" + e.user("token"), Generation: l.Generation})
	if err != nil {
		t.Fatal(err)
	}
	sb := &sandbox{e: e, userID: user, arn: arn}
	t.Cleanup(func() {
		if t.Failed() {
			sb.dumpLogs()
		}
	})
	if code := sb.exitCode(20 * time.Second); code == 0 {
		t.Fatal("a task without the lease exited 0")
	}
	if w := e.s3rec.writes(time.Time{}); len(w) > 0 {
		t.Errorf("S3 writes: %v", w)
	}
	if w := e.ddbrec.writes(time.Time{}); len(w) > 0 {
		t.Errorf("DynamoDB writes: %v", w)
	}
	if after, _ := shared.Store.Get(ctx, user); after.Version != before.Version {
		t.Errorf("record changed: %+v", after)
	}
	select {
	case f := <-cl.frames:
		t.Errorf("client got %s", f)
	default:
	}
}
