package agent_test

import (
	"testing"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/frames"
)

// receiptOf waits for a saved status frame whose receipt satisfies ok.
func receiptOf(t *testing.T, c conn, what string, ok func(*frames.Receipt) bool) *frames.Receipt {
	t.Helper()
	f := c.Next(testkit.Wait, what, func(f string) bool {
		fr, isPlatform := testkit.Platform(f)
		return isPlatform && fr.Type == frames.TypeStatus && fr.State == frames.Saved && fr.Receipt != nil && ok(fr.Receipt)
	})
	fr, _ := testkit.Platform(f)
	return fr.Receipt
}

// A periodic sync that stores a change tells the user's clients its receipt and
// records the same on the user's record; so does the sync that stores the last change
// before a stop (the final one, unless a periodic one got there first).
func TestAgent_Sync_ReceiptToClientsAndRecord(t *testing.T) {
	h := newHarness(t, map[string]string{agent.EnvSyncInterval: "1s"})
	cl := h.connect()
	h.acquire()
	a := h.agent(h.store, h.bucket)
	stop, result := h.run(a)
	h.running()
	if err := writeFile(a.Config.Workspace(), "one.txt", "one"); err != nil {
		t.Fatal(err)
	}
	r := receiptOf(t, cl, "receipt of one.txt", func(r *frames.Receipt) bool { return r.Files >= 1 })
	if r.Generation != h.lease.Generation || r.Bytes < 3 || len(r.Digest) != 64 || r.Time.IsZero() {
		t.Fatalf("receipt %+v", r)
	}
	testkit.Eventually(t, testkit.Wait, func() bool {
		got := h.record().LastSync
		return got != nil && got.Digest == r.Digest
	}, func() string { return "the record never had the receipt" })
	if got := h.record().LastSync; !got.Time.Equal(r.Time) || got.Generation != r.Generation || got.Files != r.Files || got.Bytes != r.Bytes {
		t.Fatalf("record's receipt %+v, frame's %+v", got, r)
	}

	if err := writeFile(a.Config.Workspace(), "two.txt", "two"); err != nil {
		t.Fatal(err)
	}
	stop()
	// The stop's final sync, or a periodic one just before it, stores both notes.
	last := receiptOf(t, cl, "receipt of both notes", func(r *frames.Receipt) bool { return r.Files == 2 })
	if err := result(); err != nil {
		t.Fatal(err)
	}
	if got := h.record().LastSync; got == nil || got.Digest != last.Digest || got.Files < 2 {
		t.Fatalf("after the stop the record's receipt is %+v, the last frame's %+v", got, last)
	}
}
