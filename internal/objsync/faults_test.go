package objsync_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

func manyNodes(n int, version string) []node {
	nodes := make([]node, n)
	for i := range nodes {
		nodes[i] = node{
			path:  fmt.Sprintf("d%d/f%03d", i%3, i),
			data:  []byte(fmt.Sprintf("%s of file %d", version, i)),
			mtime: baseTime.Add(time.Duration(i) * time.Second),
		}
		if version != "v1" {
			nodes[i].mtime = nodes[i].mtime.Add(time.Hour)
		}
	}
	return nodes
}

func rewrite(t *testing.T, dir string, nodes []node) {
	t.Helper()
	for _, n := range nodes {
		os.Remove(filepath.Join(dir, n.path))
	}
	writeTree(t, dir, nodes)
}

// A sync cancelled midway leaves the previous marker; the next one finishes the job.
func TestSyncer_Sync_InterruptedKeepsOldMarker(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	s.Generation = 1
	writeTree(t, s.Dir(), manyNodes(60, "v1"))
	mustSync(t, s)
	old := f.marker()

	rewrite(t, s.Dir(), manyNodes(60, "v2"))
	s.Concurrency = 1
	ctx, cancel := context.WithCancel(context.Background())
	s.Progress = func(p objsync.Progress) {
		if p.Files == 20 {
			cancel()
		}
	}
	st, err := s.Sync(ctx)
	if !errors.Is(err, context.Canceled) || st.Files < 20 || st.Files >= 60 {
		t.Fatalf("interrupted sync: %+v, %v", st, err)
	}
	if m := f.marker(); *m != *old {
		t.Fatalf("an unfinished sync moved the marker: %+v, was %+v", m, old)
	}

	s.Progress = nil
	st2 := mustSync(t, s)
	if st2.Files != 60-st.Files {
		t.Fatalf("resumed sync uploaded %d files after %d", st2.Files, st.Files)
	}
	if m := f.marker(); !m.Time.After(old.Time) {
		t.Fatalf("finished sync did not move the marker: %+v", m)
	}
	dst := f.syncer("", "")
	mustRestore(t, dst)
	sameTree(t, snapshot(t, s.Dir()), snapshot(t, dst.Dir()))
}

// 500s, 503s and answers slower than the header timeout are retried with backoff, on
// uploads and downloads alike.
func TestSyncer_SyncRestore_RetriesServerErrorsAndSlowResponses(t *testing.T) {
	// More attempts than injected faults, so no request can run out of them.
	f := newFixtureWith(t, s3bucket.Options{
		UsePathStyle: true, MaxAttempts: 12, MaxBackoff: 5 * time.Millisecond, ResponseHeaderTimeout: 300 * time.Millisecond,
	})
	faults := []s3local.Fault{
		{Method: http.MethodPut, Status: http.StatusInternalServerError, Count: 6},
		{Method: http.MethodPut, Latency: 5 * time.Second, Count: 2},
		{Method: http.MethodGet, Status: http.StatusServiceUnavailable, Count: 3},
	}
	for _, ft := range faults {
		if err := f.srv.Faults.Inject(ft); err != nil {
			t.Fatal(err)
		}
	}
	s := f.syncer("", "")
	writeTree(t, s.Dir(), manyNodes(40, "v1"))
	mustSync(t, s)
	dst := f.syncer("", "")
	mustRestore(t, dst)
	if n := f.srv.Faults.Injected(); n != 11 {
		t.Fatalf("%d faults hit, want all 11", n)
	}
	sameTree(t, snapshot(t, s.Dir()), snapshot(t, dst.Dir()))
}

// A sync that ultimately fails says so, keeps what did succeed, and never writes the
// marker; no signature reaches the log.
func TestSyncer_Sync_FailureWritesNoMarker(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), manyNodes(10, "v1"))
	if err := f.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Sync(context.Background())
	var pe *objsync.PartialError
	if !errors.As(err, &pe) || len(pe.Failures) != 10 || st.Failed != 10 || !strings.Contains(err.Error(), "500") {
		t.Fatalf("want a PartialError naming 10 files, got %+v, %v", st, err)
	}
	if m := f.marker(); m != nil {
		t.Fatalf("a failed first sync wrote a marker: %+v", m)
	}
	f.srv.Faults.Clear()
	mustSync(t, s)
	old := f.marker()

	// Fail a later sync halfway: one try per request, one upload at a time, and half
	// the requests failed (by a seeded draw, so the run repeats).
	s2, err := objsync.New(f.bucketWith(s3bucket.Options{UsePathStyle: true, MaxAttempts: 1}), f.prefix, s.Dir(), s.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	s2.Concurrency, s2.Log = 1, f.log
	rewrite(t, s.Dir(), manyNodes(10, "v2"))
	if err := f.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError, Fraction: 0.5}); err != nil {
		t.Fatal(err)
	}
	st, err = s2.Sync(context.Background())
	if !errors.As(err, &pe) || st.Files+st.Failed != 10 || st.Files == 0 {
		t.Fatalf("half-failed sync: %+v, %v", st, err)
	}
	if m := f.marker(); *m != *old {
		t.Fatalf("a failed sync moved the marker to %+v", m)
	}
	f.srv.Faults.Clear()
	if st2 := mustSync(t, s); st2.Files != st.Failed {
		t.Fatalf("retry uploaded %d, want the %d that failed", st2.Files, st.Failed)
	}
	for _, secret := range []string{"Signature=", "X-Amz-Signature", "AWS4-HMAC-SHA256", "Credential="} {
		if strings.Contains(f.logs.String(), secret) {
			t.Fatalf("log carries %q:\n%s", secret, f.logs)
		}
	}
}

var errLeaseLost = errors.New("lease lost")

// A fence that refuses midway stops the sync: no upload starts after the refusal and
// the marker is never written.
func TestSyncer_Sync_FenceRefusesMidSync(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	s.Concurrency = 4
	writeTree(t, s.Dir(), manyNodes(50, "v1"))
	var passed, calls atomic.Int32
	s.Fence = func(context.Context) error {
		if calls.Add(1) > 10 {
			return errLeaseLost
		}
		passed.Add(1)
		return nil
	}
	_, err := s.Sync(context.Background())
	if !errors.Is(err, objsync.ErrFenced) || !errors.Is(err, errLeaseLost) {
		t.Fatalf("want ErrFenced wrapping the fence's error, got %v", err)
	}
	puts := f.srv.Faults.Requests(http.MethodPut)
	if puts >= int(passed.Load()) { // the first pass guards the whole sync, the rest one upload each
		t.Fatalf("%d PUTs after %d fence passes", puts, passed.Load())
	}
	if f.marker() != nil {
		t.Fatal("a fenced sync wrote the marker")
	}

	// Refused from the start: not one request.
	before := f.srv.Faults.Requests("")
	s.Fence = func(context.Context) error { return errLeaseLost }
	if _, err := s.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("want ErrFenced, got %v", err)
	}
	if n := f.srv.Faults.Requests(""); n != before {
		t.Fatalf("%d requests by a fenced sync", n-before)
	}

	// Deletions and the marker are fenced too.
	s.Fence = nil
	mustSync(t, s)
	m := f.marker()
	os.Remove(filepath.Join(s.Dir(), "d0", "f000"))
	calls.Store(0)
	s.Fence = func(context.Context) error {
		if calls.Add(1) > 1 {
			return errLeaseLost
		}
		return nil
	}
	if _, err := s.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("want ErrFenced, got %v", err)
	}
	if keys := f.keys(); len(keys) != 51 {
		t.Fatalf("a fenced sync deleted: %d keys left", len(keys))
	}
	if got := f.marker(); *got != *m {
		t.Fatal("a fenced sync moved the marker")
	}
}

// A sandbox whose lease was taken over (a newer generation's marker in the bucket)
// uploads nothing and cannot restore.
func TestSyncer_Sync_NewerGenerationFences(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	a.Generation = 1
	writeTree(t, a.Dir(), []node{{path: "doc", data: []byte("from generation 1")}})
	mustSync(t, a)

	b := f.syncer("", "")
	b.Generation = 2
	mustRestore(t, b)
	mustSync(t, b)

	writeTree(t, a.Dir(), []node{{path: "late", data: []byte("stale writer")}})
	puts := f.srv.Faults.Requests(http.MethodPut)
	if _, err := a.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale sync: want ErrFenced, got %v", err)
	}
	if n := f.srv.Faults.Requests(http.MethodPut); n != puts {
		t.Fatalf("the stale writer made %d PUTs", n-puts)
	}
	if _, err := a.Restore(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale restore: want ErrFenced, got %v", err)
	}
	if m := f.marker(); m.Generation != 2 {
		t.Fatalf("marker generation %d", m.Generation)
	}
}

// A file rewritten between hashing and uploading is never stored with a hash that
// does not match its bytes: the upload is abandoned before its last byte and retried;
// a file that keeps changing is left for the next sync, with the bucket's copy intact.
func TestSyncer_Sync_FileChangingDuringUpload(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	p := filepath.Join(s.Dir(), "log.txt")
	writeTree(t, s.Dir(), []node{{path: "log.txt", data: randomBytes(1, 1<<20)}})
	mustSync(t, s)

	// The fence runs after the hash and before the upload: change the file there.
	version := byte(2)
	var changes atomic.Int32
	change := func() {
		changes.Add(1)
		version++
		os.WriteFile(p, randomBytes(uint64(version), 1<<20), 0o644) // same size
	}
	os.Chtimes(p, time.Now(), time.Now())
	var calls int
	s.Fence = func(context.Context) error {
		calls++
		if calls == 2 {
			change()
		}
		return nil
	}
	if st := mustSync(t, s); st.Files != 1 || st.Skipped != 0 {
		t.Fatalf("%+v", st)
	}
	want := readFile(t, p)
	dst := f.syncer("", "")
	mustRestore(t, dst) // verifies every hash
	if readFile(t, filepath.Join(dst.Dir(), "log.txt")) != want {
		t.Fatal("restored content is not the file's last version")
	}

	// Changing on every attempt: skipped, not failed; the stored copy stays whole.
	s.Fence = func(context.Context) error { change(); return nil }
	before := changes.Load()
	os.Chtimes(p, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	st := mustSync(t, s)
	if st.Skipped != 1 || st.Files != 0 || changes.Load()-before < 1+objsync.DefaultChangedRetries {
		t.Fatalf("%+v after %d changes", st, changes.Load()-before)
	}
	dst2 := f.syncer("", "")
	mustRestore(t, dst2)
	if readFile(t, filepath.Join(dst2.Dir(), "log.txt")) != want {
		t.Fatal("the bucket's copy changed though no upload finished")
	}
	s.Fence = nil
	if st := mustSync(t, s); st.Files != 1 {
		t.Fatalf("the settled file was not uploaded: %+v", st)
	}
}

// Each restore and sync logs one JSON line with the user id and its counts.
func TestSyncer_Sync_LogsOneLine(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("x")}})
	mustSync(t, s)
	var done int
	for _, rec := range f.logs.With(t, "op", "sync") {
		// The summary carries every count; no other line of a sync has "unchanged".
		if _, summary := rec["unchanged"]; summary {
			done++
			if rec["userId"] != testUser || rec["prefix"] != f.prefix || rec["files"] != 1.0 || rec["durationMs"] == nil || rec["error"] != nil {
				t.Fatalf("summary line %v", rec)
			}
		}
	}
	if done != 1 {
		t.Fatalf("%d summary lines:\n%s", done, f.logs)
	}
}
