package testkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
)

// Loss is what one kill -9 of a sandbox under continuous writes lost (CrashUnderWrites).
type Loss struct {
	// Writes counts the writes completed before the kill; Lost those of them the next
	// sandbox did not restore.
	Writes, Lost int
	// Window is the span of the lost writes: from the completion of the earliest lost
	// write to the kill (0 when nothing was lost). The recovery point of that crash.
	Window time.Duration
	// SinceReceipt is how long before the kill the last receipt a client heard had
	// been taken (its Time): what that receipt left unpromised.
	SinceReceipt time.Duration
	// Receipt is that receipt.
	Receipt frames.Receipt
	// SyncLag is how long after its sync began reading the workspace the second receipt
	// the run waited for reached the client: that sync's duration, its marker, its record
	// and its post. The sync in flight at the kill took about as long, so a crash loses
	// at most SYNC_INTERVAL plus about this.
	SyncLag time.Duration
}

// lossWriter writes one new file into dir every period, as a busy workload does, and
// records when each write completed.
type lossWriter struct {
	dir    string
	period time.Duration

	mu      sync.Mutex
	done    []time.Time // done[i]: when write i returned
	err     error
	changed chan struct{} // closed and replaced at every write
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startLossWriter(dir string, period time.Duration) (*lossWriter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	w := &lossWriter{dir: dir, period: period, changed: make(chan struct{}), stop: make(chan struct{})}
	w.wg.Go(w.run)
	return w, nil
}

func (w *lossWriter) run() {
	t := time.NewTicker(w.period)
	defer t.Stop()
	for i := 0; ; i++ {
		// The file's own content names it, so a restored copy can be checked whole.
		err := os.WriteFile(filepath.Join(w.dir, strconv.Itoa(i)), []byte("write "+strconv.Itoa(i)+"\n"), 0o644)
		at := time.Now()
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		w.done = append(w.done, at)
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// awaitWriteAfter waits until a write completed at or after at.
func (w *lossWriter) awaitWriteAfter(ctx context.Context, at time.Time) error {
	for {
		w.mu.Lock()
		ok := len(w.done) > 0 && !w.done[len(w.done)-1].Before(at)
		ch := w.changed
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *lossWriter) close() ([]time.Time, error) {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done, w.err
}

// CrashUnderWrites measures what a kill -9 of user's running sandbox loses. A writer
// puts a new file into the sandbox's workspace every period (from outside the task,
// as its workload would), c — the user's connected client — waits for the receipts of
// two syncs that ran after the writes began, then for a write completed killAfter
// after the second arrived, and the task is killed with SIGKILL at once: no final sync, no
// release. Once the task's end has ended the lease, c's next frame starts a new
// sandbox, which restores; the writes completed before the kill that it lacks are the
// loss. It fails tb if a restored file is not what was written, or if a write the last
// receipt heard before the kill promised (completed before its Time) is missing.
func (s *Stack) CrashUnderWrites(tb testing.TB, c *Client, user string, period, killAfter, timeout time.Duration) Loss {
	tb.Helper()
	rec := s.Running(tb, user, timeout)
	pid := s.TaskPid(tb, rec.TaskARN)
	run := "loss-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	w, err := startLossWriter(filepath.Join(s.Workspace(tb, rec.TaskARN), run), period)
	if err != nil {
		tb.Fatal(err)
	}
	receiptAfter := func(t time.Time) func(string) bool {
		return func(f string) bool {
			fr, ok := Platform(f)
			return ok && fr.State == frames.Saved && fr.Receipt != nil && fr.Receipt.Generation == rec.Generation && fr.Receipt.Time.After(t)
		}
	}
	// The first sync after the writes began stores part of an interval's writes; the
	// next stores a whole interval's, as the sync in flight at the kill does.
	first, _ := Platform(c.Next(timeout, "a receipt of a sync after the writes began", receiptAfter(time.Now())))
	f := c.Next(timeout, "the receipt of the next sync", receiptAfter(first.Receipt.Time))
	heard := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := w.awaitWriteAfter(ctx, heard.Add(killAfter)); err != nil {
		tb.Fatalf("the writer stalled: %v", err)
	}
	// The last receipt the client heard before the kill.
	last, _ := Platform(f)
	for _, p := range c.Pending() {
		if fr, ok := Platform(p); ok && fr.State == frames.Saved && fr.Receipt != nil && fr.Receipt.Time.After(last.Receipt.Time) {
			last = fr
		}
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	done, err := w.close()
	if err != nil {
		tb.Fatalf("writer: %v", err)
	}

	// The task's end ends the lease; the next frame starts the next sandbox.
	s.WaitState(tb, user, timeout, "ended", func(sb *state.Sandbox) bool { return !sb.Live(time.Now()) })
	c.Send(`{"type":"notes"}`)
	c.Status(frames.Ready, timeout)
	next := s.Running(tb, user, timeout)
	if next.TaskARN == rec.TaskARN || next.Generation <= rec.Generation {
		tb.Fatalf("%s: not a new sandbox after the kill: %s generation %d", user, next.TaskARN, next.Generation)
	}
	restored := filepath.Join(s.Workspace(tb, next.TaskARN), run)

	anchor, _ := Platform(f)
	loss := Loss{Receipt: *last.Receipt, SinceReceipt: killed.Sub(last.Receipt.Time),
		SyncLag: heard.Sub(anchor.Receipt.Time.Add(objsync.MarkerSlack))}
	var firstLost time.Time
	for i, at := range done {
		if at.After(killed) {
			break // finished after the kill: never part of what was written
		}
		loss.Writes++
		b, err := os.ReadFile(filepath.Join(restored, strconv.Itoa(i)))
		switch {
		case os.IsNotExist(err):
			loss.Lost++
			if firstLost.IsZero() {
				firstLost = at
			}
			if at.Before(last.Receipt.Time) {
				tb.Errorf("write %d completed at %s, before the receipt's time %s, was not restored", i, at.Format(time.RFC3339Nano), last.Receipt.Time.Format(time.RFC3339Nano))
			}
		case err != nil:
			tb.Fatal(err)
		case string(b) != fmt.Sprintf("write %d\n", i):
			tb.Errorf("write %d restored as %q", i, b)
		}
	}
	if !firstLost.IsZero() {
		loss.Window = killed.Sub(firstLost)
	}
	return loss
}
