package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// connect → ready → frames → idle stop → reconnect → the files are restored.
func TestE2E_IdleStopThenRestore(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, nil) // SLEEP_AFTER 3 s
	const user = "user_carol"
	c := s.DialReady(t, user, coldStart)
	c.Note("remember me", reply)
	first := s.Running(t, user, reply)

	c.Close()
	// No connection and no frame for SLEEP_AFTER: the sandbox syncs and stops.
	s.Stopped(t, user, coldStart)
	// The slot comes back once the task has stopped (its stop event).
	s.ExactCapacity(t, 0)

	c2 := s.DialReady(t, user, coldStart)
	wantNotes(t, c2, "remember me")
	replaced(t, s, user, first)
}

// With every sandbox slot taken, a new user is told so in a frame, not by a refused
// handshake; once a slot frees, the user's next frame starts a sandbox.
func TestE2E_CapacityFullReportedAsFrame(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) { o.Overrides["MAX_SANDBOXES"] = "1" })
	first := s.DialReady(t, "user_erin", coldStart)
	second := s.Dial(t, "user_frank")
	if r := second.ErrorFrame(reply); r != frames.ReasonCapacity {
		t.Fatalf("reason = %q, want capacity", r)
	}
	second.Send("hello?")
	if r := second.ErrorFrame(reply); r != frames.ReasonCapacity {
		t.Fatalf("frame while full: reason = %q, want capacity", r)
	}
	first.Close()
	s.Stopped(t, "user_erin", coldStart)
	s.ExactCapacity(t, 0) // the slot comes back once the stopped sandbox's task has stopped
	second.Send("now?")
	second.Status(frames.Ready, coldStart)
}

// Forged, tampered and expired URLs are refused at the handshake, and nothing is
// recorded for them.
func TestE2E_ForgedAndExpiredURLsRefused(t *testing.T) {
	s := apps.Get(t)
	good, err := s.SignURL("user_ivy")
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := auth.NewSigner("an-attacker-secret-of-at-least-32-bytes")
	forged, _ := forger.SignURL(s.Gateway.WebSocketURL(), "user_ivy")
	clock := testkit.NewClock()
	clock.Advance(-time.Hour)
	expiredSigner, _ := auth.NewSigner(local.DevSecret)
	expiredSigner.Now = clock.Now
	expired, _ := expiredSigner.SignURL(s.Gateway.WebSocketURL(), "user_ivy")
	for name, url := range map[string]string{
		"forged":   forged,
		"expired":  expired,
		"tampered": strings.Replace(good, "user_ivy", "user_ivz", 1),
		"unsigned": s.Gateway.WebSocketURL() + "?userId=user_ivy",
	} {
		_, err := testkit.DialURL(t, url)
		var he *testkit.HandshakeError
		if !errors.As(err, &he) || (he.Status != http.StatusForbidden && he.Status != http.StatusUnauthorized) {
			t.Fatalf("%s URL: %v, want a refused handshake (401/403)", name, err)
		}
	}
	for _, u := range []string{"user_ivy", "user_ivz"} {
		if _, err := s.Store.Get(context.Background(), u); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("a refused handshake left a record for %s: %v", u, err)
		}
	}
}
