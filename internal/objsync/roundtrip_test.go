package objsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
)

// The round trip: nested dirs, empty files, a 50 MB file, unicode and awkward
// names, modes and nanosecond mtimes, an empty directory and symlinks inside Dir,
// restored byte for byte into a fresh directory.
func TestSyncer_SyncRestore_RoundTrip(t *testing.T) {
	f := newFixture(t)
	src := f.syncer("", "")
	src.Generation = 1
	big := randomBytes(1, 50<<20)
	writeTree(t, src.Dir(), []node{
		{path: "a.txt", data: []byte("hello")},
		{path: "empty", data: nil, mode: 0o600},
		{path: "dir/sub/deep/tool.sh", data: randomBytes(2, 4096), mode: 0o755},
		{path: "dir/readonly.txt", data: []byte("ro"), mode: 0o444},
		{path: "ünïcödé/日本語.txt", data: []byte("こんにちは")},
		{path: "emoji-🙂.md", data: []byte("# hi")},
		{path: "spaces and+plus%percent#hash?.txt", data: []byte("odd")},
		{path: ".hidden", data: []byte("dot")},
		{path: ".last-sync", data: []byte("a user file named like the marker")},
		{path: "big/50mb.bin", data: big},
		{path: "old", data: []byte("1969"), mtime: time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{path: "empty-dir", dir: true, mode: 0o700},
		{path: "links/to-file", link: "../a.txt"},
		{path: "links/to-dir", link: "../dir"},
	})
	want := snapshot(t, src.Dir())

	st := mustSync(t, src)
	if st.Files != len(want) || st.Bytes < int64(len(big)) {
		t.Fatalf("sync stats %+v for %d paths", st, len(want))
	}
	if m := f.marker(); m == nil || m.Files != len(want)-1 {
		t.Fatalf("marker %+v, want %d files", m, len(want)-1)
	}
	keys := f.keys()
	if !slices.Contains(keys, "files/.last-sync") || !slices.Contains(keys, ".last-sync") ||
		!slices.Contains(keys, "files/empty-dir/") || !slices.Contains(keys, "files/ünïcödé/日本語.txt") {
		t.Fatalf("key layout: %v", keys)
	}

	dst := f.syncer("", "")
	dst.Generation = 2 // the next sandbox
	rst := mustRestore(t, dst)
	if rst.Files != len(want) || rst.Bytes != st.Bytes || rst.Kept != 0 || rst.Failed != 0 {
		t.Fatalf("restore stats %+v, sync stats %+v", rst, st)
	}
	sameTree(t, want, snapshot(t, dst.Dir()))

	// The restored tree is current: syncing it uploads nothing; the new generation
	// writes its marker once.
	_, _, puts, _ := f.bucket.calls()
	if st := mustSync(t, dst); st.Files != 0 || st.Deleted != 0 || st.Unchanged != len(want) {
		t.Fatalf("sync after restore: %+v", st)
	}
	if _, _, p, _ := f.bucket.calls(); p != puts+1 {
		t.Fatalf("%d puts after a restore, want only the marker", p-puts)
	}
	if m := f.marker(); m.Generation != 2 {
		t.Fatalf("marker generation %d after the new sandbox synced", m.Generation)
	}
}

// 2,500 files need three listing pages to restore and three delete batches to remove.
func TestSyncer_SyncRestore_ManyFiles(t *testing.T) {
	f := newFixture(t)
	src := f.syncer("", "")
	nodes := make([]node, 2500)
	for i := range nodes {
		nodes[i] = node{path: fmt.Sprintf("d%02d/f%04d.txt", i%50, i), data: []byte(fmt.Sprintf("file %d\n", i))}
	}
	writeTree(t, src.Dir(), nodes)
	want := snapshot(t, src.Dir())
	if st := mustSync(t, src); st.Files != 2500 {
		t.Fatalf("uploaded %d files", st.Files)
	}

	dst := f.syncer("", "")
	lists, _, _, _ := f.bucket.calls()
	if st := mustRestore(t, dst); st.Files != 2500 {
		t.Fatalf("restored %d files", st.Files)
	}
	if l, _, _, _ := f.bucket.calls(); l-lists < 3 {
		t.Fatalf("restore listed %d pages for 2,500 keys", l-lists)
	}
	sameTree(t, want, snapshot(t, dst.Dir()))

	// Delete all but one: 2,499 keys in batches of at most 1,000.
	for _, n := range nodes[1:] {
		if err := os.Remove(filepath.Join(dst.Dir(), n.path)); err != nil {
			t.Fatal(err)
		}
	}
	f.bucket.mu.Lock()
	f.bucket.deletes = nil
	f.bucket.mu.Unlock()
	if st := mustSync(t, dst); st.Deleted != 2499 || st.Files != 49 { // 49 emptied directories are kept as such
		t.Fatalf("deleted %d keys, uploaded %d", st.Deleted, st.Files)
	}
	total := 0
	for _, batch := range f.bucket.deletes {
		if len(batch) > objsync.MaxDeleteBatch {
			t.Fatalf("a delete batch of %d keys", len(batch))
		}
		total += len(batch)
	}
	if len(f.bucket.deletes) != 3 || total != 2499 {
		t.Fatalf("%d batches, %d keys", len(f.bucket.deletes), total)
	}
	if keys := f.keys(); len(keys) != 2+49 { // the marker, the kept file, 49 now-empty directories
		t.Fatalf("%d keys left", len(keys))
	}
}

func TestSyncer_Sync_DeletionsPropagate(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{
		{path: "keep.txt", data: []byte("k")},
		{path: "gone.txt", data: []byte("g")},
		{path: "sub/gone.txt", data: []byte("g")},
		{path: "sub/deeper/gone.txt", data: []byte("g")},
		{path: "empty", dir: true},
	})
	mustSync(t, s)
	for _, p := range []string{"gone.txt", "sub", "empty"} {
		if err := os.RemoveAll(filepath.Join(s.Dir(), p)); err != nil {
			t.Fatal(err)
		}
	}
	if st := mustSync(t, s); st.Deleted != 4 {
		t.Fatalf("deleted %d keys, want 4", st.Deleted)
	}
	if keys := f.keys(); !slices.Equal(keys, []string{".last-sync", "files/keep.txt"}) {
		t.Fatalf("keys %v", keys)
	}
	dst := f.syncer("", "")
	mustRestore(t, dst)
	sameTree(t, snapshot(t, s.Dir()), snapshot(t, dst.Dir()))
}

// A file turned into an empty directory of the same name (and back) swaps its key.
func TestSyncer_Sync_KindChange(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "x", data: []byte("file")}, {path: "y", data: []byte("y")}})
	mustSync(t, s)
	os.Remove(filepath.Join(s.Dir(), "x"))
	writeTree(t, s.Dir(), []node{{path: "x", dir: true}})
	mustSync(t, s)
	if keys := f.keys(); !slices.Equal(keys, []string{".last-sync", "files/x/", "files/y"}) {
		t.Fatalf("keys %v", keys)
	}
	dst := f.syncer("", "")
	mustRestore(t, dst)
	sameTree(t, snapshot(t, s.Dir()), snapshot(t, dst.Dir()))
}

// Repeated syncs of an unchanged tree send nothing, and do not even read files whose
// size and mtime match the manifest: content changed behind an unchanged stat is not
// seen (the documented cost of not hashing).
func TestSyncer_Sync_UnchangedTreeIsFree(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("aaaa")}, {path: "b/c", data: []byte("cccc")}})
	mustSync(t, s)
	before := f.srv.Faults.Requests("")
	for range 3 {
		if st := mustSync(t, s); st.Files != 0 || st.Unchanged != 2 {
			t.Fatalf("%+v", st)
		}
	}
	if n := f.srv.Faults.Requests(""); n != before {
		t.Fatalf("unchanged syncs made %d requests", n-before)
	}
	p := filepath.Join(s.Dir(), "a")
	fi, _ := os.Stat(p)
	os.WriteFile(p, []byte("AAAA"), 0o644)
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	if st := mustSync(t, s); st.Files != 0 {
		t.Fatalf("a file with unchanged size and mtime was read and uploaded: %+v", st)
	}
	// A real edit moves the mtime and is uploaded.
	os.Chtimes(p, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second))
	if st := mustSync(t, s); st.Files != 1 || st.Unchanged != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestSyncer_Sync_Excludes(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{
		{path: "src/app.js", data: []byte("app")},
		{path: "node_modules/.cache/big", data: []byte("cache")},
		{path: "web/node_modules/.cache/x/y", data: []byte("cache")},
		{path: "web/node_modules/react/index.js", data: []byte("kept")},
		{path: "pkg/__pycache__/m.pyc", data: []byte("pyc")},
		{path: "debug.log", data: []byte("log")},
		{path: "build/out", data: []byte("out")},
		{path: "src/build/out", data: []byte("not anchored away")},
	})
	mustSync(t, s)
	want := []string{".last-sync", "files/src/app.js", "files/web/node_modules/react/index.js",
		"files/debug.log", "files/build/out", "files/src/build/out"}
	slices.Sort(want)
	if keys := f.keys(); !slices.Equal(keys, want) {
		t.Fatalf("default excludes: keys %v, want %v", keys, want)
	}

	// Custom patterns; what they now exclude is removed from the bucket.
	s.Excludes = append(objsync.DefaultExcludes(), "*.log", "/build")
	if st := mustSync(t, s); st.Deleted != 2 {
		t.Fatalf("deleted %d", st.Deleted)
	}
	want = []string{".last-sync", "files/src/app.js", "files/src/build/out", "files/web/node_modules/react/index.js"}
	if keys := f.keys(); !slices.Equal(keys, want) {
		t.Fatalf("custom excludes: keys %v, want %v", keys, want)
	}

	s.Excludes = []string{"a/[b"}
	if _, err := s.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "a/[b") {
		t.Fatalf("bad pattern: %v", err)
	}
}

func TestSyncer_Sync_Symlinks(t *testing.T) {
	f := newFixture(t)
	base := t.TempDir()
	secret := filepath.Join(base, "outside-secret.txt")
	os.WriteFile(secret, []byte("SECRET-OUTSIDE-DIR"), 0o600)
	os.MkdirAll(filepath.Join(base, "outside-dir"), 0o755)
	os.WriteFile(filepath.Join(base, "outside-dir", "x"), []byte("SECRET-OUTSIDE-DIR"), 0o600)
	s := f.syncer(filepath.Join(base, "work"), "")
	writeTree(t, s.Dir(), []node{
		{path: "real/file.txt", data: []byte("inside")},
		{path: "abs", link: secret},
		{path: "rel-out", link: "../outside-secret.txt"},
		{path: "dir-out", link: "../outside-dir"},
		{path: "sneaky", link: "real/../../outside-dir"},
		{path: "in-file", link: "real/file.txt"},
		{path: "in-dir", link: "real"},
		{path: "real/up", link: ".."},
		{path: "dangling", link: "not/there"},
	})
	st := mustSync(t, s)
	if st.Skipped != 4 {
		t.Fatalf("skipped %d, want the 4 links leading out", st.Skipped)
	}
	want := []string{".last-sync", "files/dangling", "files/in-dir", "files/in-file", "files/real/file.txt", "files/real/up"}
	if keys := f.keys(); !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v (links into Dir are stored as links, never followed)", keys, want)
	}
	dst := f.syncer("", "")
	mustRestore(t, dst)
	got := snapshot(t, dst.Dir())
	for _, p := range []string{"in-dir", "in-file", "real/up", "dangling"} {
		if got[p].Kind != "link" {
			t.Errorf("%s restored as %+v, want a symlink", p, got[p])
		}
	}
	if got["in-dir"].Hash != "real" || len(got) != 5 {
		t.Fatalf("restored %+v", got)
	}
}

// Restore and Sync on one Syncer from several goroutines run one at a time, and
// progress reports never overlap.
func TestSyncer_Sync_Concurrent(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	var in, overlaps atomic.Int32
	s.Progress = func(objsync.Progress) {
		if in.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(time.Microsecond)
		in.Add(-1)
	}
	nodes := make([]node, 200)
	for i := range nodes {
		nodes[i] = node{path: fmt.Sprintf("f%03d", i), data: []byte{byte(i)}}
	}
	writeTree(t, s.Dir(), nodes)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			var err error
			if i%4 == 3 {
				_, err = s.Restore(context.Background())
			} else {
				_, err = s.Sync(context.Background())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if overlaps.Load() != 0 {
		t.Fatalf("%d overlapping progress reports", overlaps.Load())
	}
	if len(f.keys()) != 201 {
		t.Fatalf("%d keys", len(f.keys()))
	}
}

func TestSyncer_Sync_Progress(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("12345")}, {path: "b", data: []byte("67")}})
	var got []objsync.Progress
	s.Progress = func(p objsync.Progress) { got = append(got, p) }
	mustSync(t, s)
	last := got[len(got)-1]
	if got[0].Files != 0 || got[0].TotalFiles != 2 || got[0].TotalBytes != 7 || last.Files != 2 || last.Bytes != 7 || last.Op != "sync" {
		t.Fatalf("progress %+v", got)
	}
}

// The marker is JSON with the writer's generation, written after the files.
func TestSyncer_Sync_MarkerCarriesGeneration(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	s.Generation = 7
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("x")}})
	mustSync(t, s)
	m := f.marker()
	if m == nil || m.Generation != 7 || m.Files != 1 || m.Bytes != 1 || time.Since(m.Time) > time.Hour {
		t.Fatalf("marker %+v", m)
	}
	f.bucket.mu.Lock()
	puts := f.bucket.puts
	f.bucket.mu.Unlock()
	if puts[len(puts)-1] != objsync.MarkerKey(f.prefix) {
		t.Fatalf("last write was %s, not the marker", puts[len(puts)-1])
	}
	// Its JSON field names are the contract with other readers.
	_, body, err := f.bucket.Get(context.Background(), objsync.MarkerKey(f.prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var raw map[string]any
	json.NewDecoder(body).Decode(&raw)
	for _, k := range []string{"generation", "time", "files", "bytes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("marker lacks %q: %v", k, raw)
		}
	}
}
