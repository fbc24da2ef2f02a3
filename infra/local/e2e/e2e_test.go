package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/stacktest"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// Two users get two sandboxes; neither sees the other's frames, notes, files or
// connections.
func TestE2E_TwoUsersIsolated(t *testing.T) {
	s := stacktest.Start(t, nil)
	alice, bob := s.Dial(t, "user_alice"), s.Dial(t, "user_bob")
	alice.Status(frames.Ready, coldStart)
	bob.Status(frames.Ready, coldStart)

	alice.Send(`{"type":"note","text":"alice's secret"}`)
	alice.JSONFrame("note.saved", reply)
	bob.Send(`{"type":"note","text":"bob's note"}`)
	bob.JSONFrame("note.saved", reply)

	if n := alice.Notes(reply); !slices.Equal(n, []string{"alice's secret"}) {
		t.Fatalf("alice sees %q", n)
	}
	if n := bob.Notes(reply); !slices.Equal(n, []string{"bob's note"}) {
		t.Fatalf("bob sees %q", n)
	}
	// Frames: an echo reaches its sender only.
	alice.Send("ping from alice")
	alice.Next(reply, "echo", func(f string) bool { return f == "ping from alice" })
	bob.Send("ping from bob")
	if f := bob.Next(reply, "echo", func(f string) bool { return strings.HasPrefix(f, "ping") }); f != "ping from bob" {
		t.Fatalf("bob received %q", f)
	}

	// Two tasks, two prefixes.
	a := s.WaitState(t, "user_alice", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })
	b := s.WaitState(t, "user_bob", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })
	if a.TaskARN == b.TaskARN || a.Endpoint == b.Endpoint {
		t.Fatalf("users share a task or an address: %s %s", a.TaskARN, a.Endpoint)
	}
	var aliceKeys []string
	for deadline := time.Now().Add(reply); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if aliceKeys = s.Keys(t, "users/user_alice/files/notes/"); len(aliceKeys) == 1 {
			break
		}
	}
	if len(aliceKeys) != 1 {
		t.Fatalf("alice's synced notes: %q", aliceKeys)
	}
	for _, k := range s.Keys(t, "users/user_bob/") {
		if strings.Contains(k, "alice") {
			t.Fatalf("bob's prefix holds %s", k)
		}
	}
	// Connections: one each.
	for _, u := range []string{"user_alice", "user_bob"} {
		conns, err := s.Store.Connections(context.Background(), u)
		if err != nil || len(conns) != 1 {
			t.Fatalf("%s connections: %+v %v", u, conns, err)
		}
	}
}

// connect → ready → frames → idle stop → reconnect → the files are restored.
func TestE2E_IdleStopThenRestore(t *testing.T) {
	s := stacktest.Start(t, nil)
	c := s.Dial(t, "user_carol")
	c.Status(frames.Ready, coldStart)
	c.Send(`{"type":"note","text":"remember me"}`)
	c.JSONFrame("note.saved", reply)
	first := s.WaitState(t, "user_carol", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })

	c.Conn.Close(websocket.StatusNormalClosure, "bye")
	// No connection and no frame for SLEEP_AFTER: the sandbox syncs and stops.
	s.WaitState(t, "user_carol", 60*time.Second, "stopped", func(sb *state.Sandbox) bool { return sb.State == state.Stopped })
	if live, _ := s.Store.Capacity(context.Background()); live != 0 {
		t.Fatalf("capacity after the idle stop = %d", live)
	}

	c2 := s.Dial(t, "user_carol")
	c2.Status(frames.Ready, coldStart)
	if n := c2.Notes(reply); !slices.Equal(n, []string{"remember me"}) {
		t.Fatalf("after restart the notes are %q", n)
	}
	second := s.WaitState(t, "user_carol", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })
	if second.TaskARN == first.TaskARN || second.Generation <= first.Generation {
		t.Fatalf("not a new sandbox: %s gen %d after %s gen %d", second.TaskARN, second.Generation, first.TaskARN, first.Generation)
	}
}

// Frames sent while the sandbox starts are queued and reach the workload in order,
// before any later frame. API Gateway does not order the invocations of one
// connection's frames (apigw reproduces that by default); sandgate keeps the order in
// which they reach it, so this stack dispatches in order to make that order the
// sending order.
func TestE2E_ColdStartFramesInOrder(t *testing.T) {
	s := stacktest.Start(t, func(o *stack.Options) {
		o.SequentialDispatch = true
		o.LaunchDelay = 2 * time.Second
	})
	c := s.Dial(t, "user_dave")
	const n = 30
	for i := range n {
		c.Send(fmt.Sprintf("frame-%02d", i))
	}
	c.Status(frames.Ready, coldStart)
	c.Send("after-ready")
	var got []string
	for len(got) < n+1 {
		got = append(got, c.Next(reply, "echo", func(f string) bool {
			return strings.HasPrefix(f, "frame-") || f == "after-ready"
		}))
	}
	for i := range n {
		if want := fmt.Sprintf("frame-%02d", i); got[i] != want {
			t.Fatalf("echo %d = %s, want %s (all: %q)", i, got[i], want, got)
		}
	}
	if got[n] != "after-ready" {
		t.Fatalf("last echo %q", got[n])
	}
	// Each item is deleted once written to the workload; the deletes trail the echoes.
	for deadline := time.Now().Add(reply); ; time.Sleep(50 * time.Millisecond) {
		items, err := s.Store.Inbox(context.Background(), "user_dave")
		if err == nil && len(items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbox not drained: %d items, %v", len(items), err)
		}
	}
}

// With every sandbox slot taken, a new user is told so in a frame, not by a refused
// handshake; once a slot frees, the user's next frame starts a sandbox.
func TestE2E_CapacityFullReportedAsFrame(t *testing.T) {
	s := stacktest.Start(t, func(o *stack.Options) {
		o.Overrides = map[string]string{"MAX_SANDBOXES": "1", "SLEEP_AFTER": "3s", "LEASE_TTL": "15s", "SYNC_INTERVAL": "1s"}
	})
	first := s.Dial(t, "user_erin")
	first.Status(frames.Ready, coldStart)
	second := s.Dial(t, "user_frank")
	if r := second.ErrorFrame(reply); r != frames.ReasonCapacity {
		t.Fatalf("reason = %q, want capacity", r)
	}
	second.Send("hello?")
	if r := second.ErrorFrame(reply); r != frames.ReasonCapacity {
		t.Fatalf("frame while full: reason = %q, want capacity", r)
	}
	first.Conn.Close(websocket.StatusNormalClosure, "done")
	s.WaitState(t, "user_erin", 60*time.Second, "stopped", func(sb *state.Sandbox) bool { return sb.State == state.Stopped })
	second.Send("now?")
	second.Status(frames.Ready, coldStart)
}

// A sandbox stopped while the user is busy (SIGTERM: a Spot interruption, a deploy)
// loses nothing: every note acknowledged before the stop is restored, and frames sent
// during the stop are queued and delivered by the next sandbox.
func TestE2E_SIGTERMDuringActivityLosesNothing(t *testing.T) {
	s := stacktest.Start(t, nil)
	c := s.Dial(t, "user_gina")
	c.Status(frames.Ready, coldStart)
	sb := s.WaitState(t, "user_gina", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })

	var saved []string
	for i := range 5 {
		text := fmt.Sprintf("note %d", i)
		c.Send(fmt.Sprintf(`{"type":"note","text":%q}`, text))
		c.JSONFrame("note.saved", reply)
		saved = append(saved, text)
	}
	pid := s.TaskPid(t, sb.TaskARN)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.Status(frames.Stopping, reply)
	// Sent while the sandbox stops: queued, then delivered by its successor.
	c.Send(`{"type":"note","text":"during the stop"}`)
	c.Status(frames.Ready, coldStart)
	c.JSONFrame("note.saved", reply)
	want := append(saved, "during the stop")
	if n := c.Notes(reply); !slices.Equal(n, want) {
		t.Fatalf("notes after the restart = %q, want %q", n, want)
	}
}

// An agent killed with -9 (no final sync, no release) is replaced by the next
// connect once its lease has expired; data synced before the kill is restored.
func TestE2E_KilledAgentReplacedAfterLeaseExpiry(t *testing.T) {
	s := stacktest.Start(t, nil)
	c := s.Dial(t, "user_hank")
	c.Status(frames.Ready, coldStart)
	c.Send(`{"type":"note","text":"synced before the kill"}`)
	c.JSONFrame("note.saved", reply)
	sb := s.WaitState(t, "user_hank", reply, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })
	// Wait for the note to reach the bucket (SYNC_INTERVAL is 1 s here).
	for deadline := time.Now().Add(reply); len(s.Keys(t, "users/user_hank/files/notes/")) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the note never reached the bucket")
		}
	}
	c.Conn.Close(websocket.StatusNormalClosure, "bye")
	if err := syscall.Kill(s.TaskPid(t, sb.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The record still says RUNNING until the lease runs out; then a connect takes over.
	s.WaitState(t, "user_hank", 30*time.Second, "expired", func(x *state.Sandbox) bool { return !x.Live(time.Now()) })
	c2 := s.Dial(t, "user_hank")
	c2.Status(frames.Ready, coldStart)
	if n := c2.Notes(reply); !slices.Equal(n, []string{"synced before the kill"}) {
		t.Fatalf("notes after the takeover = %q", n)
	}
	after := s.WaitState(t, "user_hank", reply, "running", func(x *state.Sandbox) bool { return x.State == state.Running })
	if after.TaskARN == sb.TaskARN || after.Generation <= sb.Generation {
		t.Fatalf("not replaced: %s gen %d", after.TaskARN, after.Generation)
	}
	if live, _ := s.Store.Capacity(context.Background()); live != 1 {
		t.Fatalf("capacity = %d after a takeover, want 1", live)
	}
}

// Forged, tampered and expired URLs are refused at the handshake, and nothing is
// recorded for them.
func TestE2E_ForgedAndExpiredURLsRefused(t *testing.T) {
	s := stacktest.Start(t, nil)
	good, err := s.SignURL("user_ivy")
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := auth.NewSigner("an-attacker-secret-of-at-least-32-bytes")
	forged, _ := forger.SignURL(s.Gateway.WebSocketURL(), "user_ivy")
	expiredSigner, _ := auth.NewSigner("sandgate-local-development-secret-do-not-deploy")
	expiredSigner.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	expired, _ := expiredSigner.SignURL(s.Gateway.WebSocketURL(), "user_ivy")
	for name, url := range map[string]string{
		"forged":   forged,
		"expired":  expired,
		"tampered": strings.Replace(good, "user_ivy", "user_ivz", 1),
		"unsigned": s.Gateway.WebSocketURL() + "?userId=user_ivy",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, resp, err := websocket.Dial(ctx, url, nil)
		cancel()
		if err == nil {
			t.Fatalf("%s URL accepted", name)
		}
		if resp == nil || (resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized) {
			t.Fatalf("%s URL: %v (response %v), want 401/403", name, err, resp)
		}
	}
	for _, u := range []string{"user_ivy", "user_ivz"} {
		if _, err := s.Store.Get(context.Background(), u); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("a refused handshake left a record for %s: %v", u, err)
		}
	}
}
