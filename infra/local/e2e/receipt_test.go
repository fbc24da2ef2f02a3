package e2e_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
)

// syncInterval is the shared stack's SYNC_INTERVAL (main_test.go).
const syncInterval = time.Second

// savedReceipt waits for a saved status frame whose receipt satisfies ok.
func savedReceipt(t *testing.T, c *testkit.Client, what string, ok func(*frames.Receipt) bool) frames.Receipt {
	t.Helper()
	f := c.Next(reply, what, func(f string) bool {
		fr, isPlatform := testkit.Platform(f)
		return isPlatform && fr.Type == frames.TypeStatus && fr.State == frames.Saved && fr.Receipt != nil && ok(fr.Receipt)
	})
	fr, _ := testkit.Platform(f)
	return *fr.Receipt
}

// A client that saves a note hears the receipt of the sync that stored it — the
// sandbox's generation, the note among its files, a manifest digest — and GET /status
// answers the same receipt, as it still does once the sandbox has stopped.
func TestReceipt_NoteSaved_FrameAndStatusAgree(t *testing.T) {
	t.Parallel()
	s := apps.Get(t)
	const user = "user_receipt"
	c := s.DialReady(t, user, coldStart)
	rec := s.Running(t, user, reply)
	c.Note("kept safe", reply)
	r := savedReceipt(t, c, "the receipt of the note", func(r *frames.Receipt) bool {
		return r.Files >= 1 && r.Generation == rec.Generation
	})
	if len(r.Digest) != 64 || r.Bytes < int64(len("kept safe")) || r.Time.After(time.Now()) {
		t.Fatalf("receipt %+v", r)
	}
	if m := s.Marker(t, user); m == nil || m.Digest != r.Digest || m.Generation != r.Generation || m.Files != r.Files {
		t.Fatalf("the bucket's marker %+v, the receipt %+v", m, r)
	}
	// The frame is posted after the record has it, but a later sync may have moved
	// both on by the time the status is asked: its receipt is this one or newer.
	code, body := s.HTTP(t, http.MethodGet, "/status", s.SignedQuery(t, user))
	got, _ := body["receipt"].(map[string]any)
	if code != http.StatusOK || got == nil {
		t.Fatalf("status %d %v", code, body)
	}
	at, err := time.Parse(time.RFC3339Nano, got["time"].(string))
	if err != nil || at.Before(r.Time) || got["generation"] != float64(rec.Generation) {
		t.Fatalf("status receipt %v, frame's %+v", got, r)
	}
	if at.Equal(r.Time) && (got["digest"] != r.Digest || got["files"] != float64(r.Files) || got["bytes"] != float64(r.Bytes)) {
		t.Fatalf("status receipt %v differs from the frame's %+v", got, r)
	}

	// Stopped (SIGTERM, as a deploy does): the record keeps the last receipt, which is
	// the bucket's marker.
	s.StopTask(t, rec.TaskARN)
	s.Stopped(t, user, coldStart)
	m := s.Marker(t, user)
	_, body = s.HTTP(t, http.MethodGet, "/status", s.SignedQuery(t, user))
	got, _ = body["receipt"].(map[string]any)
	if body["state"] != "STOPPED" || got == nil || got["digest"] != m.Digest || got["generation"] != float64(m.Generation) ||
		got["time"] != m.Time.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano) {
		t.Fatalf("after the stop the status is %v, the marker %+v", body, m)
	}
}

// kill -9 under continuous writes (a new file every 20 ms): the next sandbox restores
// everything the last receipt promised, and what is lost spans at most SYNC_INTERVAL
// and one sync — once killed right after a receipt, once just before the next sync.
// make bench measures it over many runs (infra/local/bench, recovery_test.go).
func TestChaos_KillUnderWrites_LossWithinSyncInterval(t *testing.T) {
	t.Parallel()
	s := apps.Get(t)
	const user = "user_killwrites"
	// A sync of this workspace takes well under a second; the rest is a loaded
	// machine's scheduling.
	const slack = 3 * time.Second
	c := s.DialReady(t, user, coldStart)
	for _, after := range []time.Duration{0, syncInterval * 9 / 10} {
		loss := s.CrashUnderWrites(t, c, user, 20*time.Millisecond, after, coldStart)
		t.Logf("kill %s after a receipt: %d of %d writes lost, window %s, receipt taken %s before the kill",
			after, loss.Lost, loss.Writes, loss.Window.Round(time.Millisecond), loss.SinceReceipt.Round(time.Millisecond))
		if loss.Writes == 0 {
			t.Fatal("nothing was written before the kill")
		}
		if loss.Window > syncInterval+slack {
			t.Errorf("lost %s of writes, more than SYNC_INTERVAL %s + %s", loss.Window, syncInterval, slack)
		}
	}
}
