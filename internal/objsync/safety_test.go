package objsync_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Safety rule 1: a restore never overwrites local data newer than the marker. Without
// the rule, "notes.txt" (edited on this disk after the last sync) would be replaced.
func TestSyncer_Restore_KeepsLocalNewerThanMarker(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	writeTree(t, a.Dir(), []node{
		{path: "notes.txt", data: []byte("bucket version")},
		{path: "stale.txt", data: []byte("bucket version")},
		{path: "same.txt", data: []byte("same")},
	})
	mustSync(t, a)
	marker := f.marker()

	b := f.syncer("", "")
	later, earlier := marker.Time.Add(time.Hour), marker.Time.Add(-time.Hour)
	writeTree(t, b.Dir(), []node{
		{path: "notes.txt", data: []byte("edited here after the last sync"), mtime: later},
		{path: "stale.txt", data: []byte("an old copy"), mtime: earlier},
		{path: "same.txt", data: []byte("same"), mtime: later},
	})
	st := mustRestore(t, b)
	if st.Kept != 1 || st.Files != 1 || st.Unchanged != 1 {
		t.Fatalf("restore stats %+v, want 1 kept, 1 restored, 1 unchanged", st)
	}
	if got := readFile(t, filepath.Join(b.Dir(), "notes.txt")); got != "edited here after the last sync" {
		t.Fatalf("newer local file overwritten: %q", got)
	}
	if got := readFile(t, filepath.Join(b.Dir(), "stale.txt")); got != "bucket version" {
		t.Fatalf("older local file kept over the bucket's: %q", got)
	}
	// The kept file is the newest copy: the next sync uploads it.
	if st := mustSync(t, b); st.Files != 1 {
		t.Fatalf("sync after restore uploaded %d files", st.Files)
	}
	c := f.syncer("", "")
	mustRestore(t, c)
	if got := readFile(t, filepath.Join(c.Dir(), "notes.txt")); got != "edited here after the last sync" {
		t.Fatalf("bucket has %q", got)
	}
}

// Without any marker (a first sync that never finished), nothing claims the bucket is
// newer: differing local files are kept, missing ones restored. The restore is not
// skipped for want of a marker, which is how the original design lost data.
func TestSyncer_Restore_WithoutMarker(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	writeTree(t, a.Dir(), []node{{path: "x", data: []byte("bucket")}, {path: "y", data: []byte("bucket")}})
	mustSync(t, a)
	if err := f.bucket.Delete(context.Background(), []string{objsync.MarkerKey(f.prefix)}); err != nil {
		t.Fatal(err)
	}
	b := f.syncer("", "")
	writeTree(t, b.Dir(), []node{{path: "x", data: []byte("local"), mtime: time.Unix(1, 0)}})
	st := mustRestore(t, b)
	if st.Kept != 1 || st.Files != 1 {
		t.Fatalf("%+v", st)
	}
	if readFile(t, filepath.Join(b.Dir(), "x")) != "local" || readFile(t, filepath.Join(b.Dir(), "y")) != "bucket" {
		t.Fatal("wrong files kept or restored")
	}
}

// Safety rule 2: an empty or missing directory never empties the bucket.
func TestSyncer_Sync_RefusesToEmptyTheBucket(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("a")}, {path: "sub/b", data: []byte("b")}})
	mustSync(t, s)
	keys, marker := f.keys(), f.marker()

	// Every file gone, directories left behind.
	os.Remove(filepath.Join(s.Dir(), "a"))
	os.Remove(filepath.Join(s.Dir(), "sub", "b"))
	if _, err := s.Sync(context.Background()); !errors.Is(err, objsync.ErrRefused) {
		t.Fatalf("empty dir: want ErrRefused, got %v", err)
	}
	// The directory itself gone (an unmounted volume).
	if err := os.RemoveAll(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(context.Background()); !errors.Is(err, objsync.ErrRefused) {
		t.Fatalf("missing dir: want ErrRefused, got %v", err)
	}
	if got := f.keys(); !slices.Equal(got, keys) {
		t.Fatalf("keys changed from %v to %v", keys, got)
	}
	if got := f.marker(); *got != *marker {
		t.Fatalf("marker rewritten: %+v", got)
	}
	if len(f.logs.With(t, "reason", "dir_empty")) == 0 || len(f.logs.With(t, "reason", "dir_unreadable")) == 0 {
		t.Fatalf("refusals not logged with a reason:\n%s", f.logs)
	}
}

// A directory that was never restored must not overwrite the bucket: a fresh sandbox
// whose restore was skipped would otherwise replace the user's settings with defaults.
func TestSyncer_Sync_RefusesWithoutRestore(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	writeTree(t, a.Dir(), []node{{path: "settings.json", data: []byte(`{"theme":"mine"}`)}})
	mustSync(t, a)

	b := f.syncer("", "")
	writeTree(t, b.Dir(), []node{{path: "settings.json", data: []byte(`{"theme":"default"}`)}})
	if _, err := b.Sync(context.Background()); !errors.Is(err, objsync.ErrRefused) {
		t.Fatalf("want ErrRefused, got %v", err)
	}
	c := f.syncer("", "")
	mustRestore(t, c)
	if got := readFile(t, filepath.Join(c.Dir(), "settings.json")); got != `{"theme":"mine"}` {
		t.Fatalf("settings overwritten: %s", got)
	}
}

// Keys that would land outside Dir are refused and nothing is written outside Dir,
// including through a symlink already on the disk.
func TestSyncer_Restore_RejectsEscapingKeys(t *testing.T) {
	f := newFixture(t)
	base := t.TempDir()
	os.Mkdir(filepath.Join(base, "outside"), 0o755)
	s := f.syncer(filepath.Join(base, "work"), filepath.Join(base, "state"))
	writeTree(t, s.Dir(), []node{{path: "out", link: filepath.Join(base, "outside")}})

	file := map[string]string{"type": "file"}
	bad := []string{
		"files/../../../escape.txt",
		"files/a/../../escape.txt",
		"files//etc/passwd",
		"files/./dot",
		"files/.sandgate-tmp-1",
		"files/out/escape.txt", // through the absolute symlink already in Dir
	}
	for _, k := range bad {
		f.putRaw(f.prefix+k, "escaped", file)
	}
	f.putRaw(f.prefix+"files/evil-link", "../../outside", map[string]string{"type": "symlink"})
	f.putRaw(f.prefix+"files/ok.txt", "fine", file)

	st, err := s.Restore(context.Background())
	var pe *objsync.PartialError
	if !errors.As(err, &pe) || !errors.Is(err, objsync.ErrBadKey) {
		t.Fatalf("want a PartialError with ErrBadKey, got %v", err)
	}
	if len(pe.Failures) != len(bad)+1 || st.Files != 1 {
		t.Fatalf("%d failures (%v), %d restored", len(pe.Failures), err, st.Files)
	}
	if readFile(t, filepath.Join(s.Dir(), "ok.txt")) != "fine" {
		t.Fatal("valid key not restored")
	}
	// Nothing anywhere under base but what belongs there.
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Type()&fs.ModeSymlink == 0 && readFile(t, p) == "escaped" {
			t.Errorf("written outside Dir or into a temporary name: %s", p)
		}
		return nil
	})
	if entries, _ := os.ReadDir(filepath.Join(base, "outside")); len(entries) != 0 {
		t.Fatalf("wrote through a symlink out of Dir: %v", entries)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), "evil-link")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a symlink leading out of Dir was created: %v", err)
	}
}

// An object that fails its hash is not written, the stale local copy stays, and the
// next sync neither uploads the stale copy over the bucket's nor deletes the object,
// until the user edits the file.
func TestSyncer_Restore_CorruptObjectIsHeld(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	writeTree(t, a.Dir(), []node{{path: "data.txt", data: []byte("version 2")}, {path: "other", data: []byte("o")}})
	mustSync(t, a)
	f.putRaw(f.prefix+"files/data.txt", "version 2", map[string]string{
		"type": "file", "mode": "0644", "mtime": "1700000000.0", "sha256": strings.Repeat("00", 32),
	})

	b := f.syncer("", "")
	writeTree(t, b.Dir(), []node{{path: "data.txt", data: []byte("version 1"), mtime: time.Unix(1, 0)}})
	_, err := b.Restore(context.Background())
	if !errors.Is(err, objsync.ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
	if got := readFile(t, filepath.Join(b.Dir(), "data.txt")); got != "version 1" {
		t.Fatalf("local copy replaced by unverified data: %q", got)
	}
	_, _, puts, _ := f.bucket.calls()
	mustSync(t, b)
	f.bucket.mu.Lock()
	for _, k := range f.bucket.puts[puts:] {
		if strings.HasSuffix(k, "data.txt") {
			t.Error("the stale local copy was uploaded over the bucket's")
		}
	}
	f.bucket.mu.Unlock()

	writeTree(t, b.Dir(), []node{{path: "data.txt", data: []byte("version 3"), mtime: time.Now()}})
	if st := mustSync(t, b); st.Files != 1 {
		t.Fatalf("the user's edit was not uploaded: %+v", st)
	}
}

// An interrupted restore leaves no temporary file; one left by a crash is removed by
// the next restore and never uploaded; the next restore resumes and takes nothing it
// wrote itself for "newer than the bucket".
func TestSyncer_Restore_Interrupted(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	nodes := make([]node, 120)
	for i := range nodes {
		nodes[i] = node{path: fmt.Sprintf("d%d/f%03d", i%4, i), data: randomBytes(uint64(i), 2048)}
	}
	writeTree(t, a.Dir(), nodes)
	mustSync(t, a)

	b := f.syncer("", "")
	b.Concurrency = 1
	ctx, cancel := context.WithCancel(context.Background())
	b.Progress = func(p objsync.Progress) {
		if p.Files == 30 {
			cancel()
		}
	}
	st, err := b.Restore(ctx)
	if !errors.Is(err, context.Canceled) || st.Files < 30 || st.Files >= 120 {
		t.Fatalf("interrupted restore: %+v, %v", st, err)
	}
	temps := func() []string {
		var found []string
		filepath.WalkDir(b.Dir(), func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), ".sandgate-tmp-") {
				found = append(found, p)
			}
			return nil
		})
		return found
	}
	if left := temps(); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// A crash would leave one behind.
	os.WriteFile(filepath.Join(b.Dir(), "d0", ".sandgate-tmp-crashed"), []byte("half"), 0o600)

	b.Progress = nil
	st2 := mustRestore(t, b)
	if st2.Kept != 0 || st2.Unchanged != st.Files || st2.Files != 120-st.Files {
		t.Fatalf("resumed restore %+v after %+v", st2, st)
	}
	if left := temps(); len(left) != 0 {
		t.Fatalf("temporary files left after the second restore: %v", left)
	}
	sameTree(t, snapshot(t, a.Dir()), snapshot(t, b.Dir()))

	os.WriteFile(filepath.Join(b.Dir(), ".sandgate-tmp-again"), []byte("half"), 0o600)
	mustSync(t, b)
	for _, k := range f.keys() {
		if strings.Contains(k, ".sandgate-tmp-") {
			t.Fatalf("a temporary file was uploaded: %s", k)
		}
	}
}

// A file changed while a sync runs, after the sync has read the directory, is newer
// than the marker that sync writes: a restore onto the same disk (an agent restarted
// before its next sync) keeps the change.
func TestSyncer_Restore_KeepsChangeMadeDuringSync(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "a", data: []byte("v1")}, {path: "b", data: []byte("v1")}})
	mustSync(t, s)

	writeTree(t, s.Dir()+"/x", []node{{path: "b", data: []byte("v2")}}) // something for the next sync to do
	var once bool
	s.Fence = func(context.Context) error {
		if !once { // after the walk, before any upload
			once = true
			os.WriteFile(filepath.Join(s.Dir(), "a"), []byte("edited during the sync"), 0o644)
		}
		return nil
	}
	mustSync(t, s)
	s.Fence = nil
	mustRestore(t, s)
	if got := readFile(t, filepath.Join(s.Dir(), "a")); got != "edited during the sync" {
		t.Fatalf("restore overwrote an edit made during the last sync: %q", got)
	}
}

// A restore that died without recording anything (its manifest lost) is redone
// without taking what it had written for local edits: files it wrote carry the
// bucket's mtimes, and one whose stored mtime is later than the marker is compared by
// content and found identical.
func TestSyncer_Restore_AfterCrashWithoutManifest(t *testing.T) {
	f := newFixture(t)
	a := f.syncer("", "")
	writeTree(t, a.Dir(), []node{
		{path: "old", data: []byte("old")},
		{path: "future", data: []byte("stamped ahead"), mtime: time.Now().Add(24 * time.Hour)},
	})
	mustSync(t, a)
	b := f.syncer("", "")
	mustRestore(t, b)
	if err := os.Remove(filepath.Join(b.StateDir(), "objsync-state.json")); err != nil {
		t.Fatal(err)
	}
	st := mustRestore(t, b)
	if st.Kept != 0 || st.Unchanged != 1 || st.Files != 1 {
		t.Fatalf("second restore %+v: want the future-stamped file identical, the other rewritten, none kept", st)
	}
	sameTree(t, snapshot(t, a.Dir()), snapshot(t, b.Dir()))
}

// A file grown past what one upload can carry is skipped with a warning: the sync
// still finishes, and the bucket keeps the version it had instead of losing it.
func TestSyncer_Sync_TooLargeKeepsStoredCopy(t *testing.T) {
	f := newFixture(t)
	s := f.syncer("", "")
	writeTree(t, s.Dir(), []node{{path: "disk.img", data: []byte("small at first")}, {path: "other", data: []byte("o")}})
	mustSync(t, s)
	// Sparse: nothing is read, the walk only sees the size.
	if err := os.Truncate(filepath.Join(s.Dir(), "disk.img"), objsync.MaxObjectSize+1); err != nil {
		t.Fatal(err)
	}
	puts := f.srv.Faults.Requests("PUT")
	st := mustSync(t, s)
	if st.Skipped != 1 || st.Files != 0 || st.Deleted != 0 {
		t.Fatalf("%+v", st)
	}
	if n := f.srv.Faults.Requests("PUT"); n != puts {
		t.Fatalf("%d PUTs for a file that cannot be uploaded", n-puts)
	}
	if !slices.Contains(f.keys(), "files/disk.img") {
		t.Fatalf("stored copy lost: %v", f.keys())
	}
	warned := false
	for _, rec := range f.logs.With(t, "path", "disk.img") {
		warned = warned || rec["level"] == "WARN" && rec["bytes"] == float64(objsync.MaxObjectSize+1)
	}
	if !warned {
		t.Fatalf("no warning naming the file and its size:\n%s", f.logs)
	}
}
