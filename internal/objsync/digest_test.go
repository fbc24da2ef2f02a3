package objsync_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/objsync"
)

// A sync that stores a change reports the marker it wrote, whose digest is what
// sha256sum makes of the workspace (the documented check); a sync with nothing to do
// writes no marker and reports none; a restore onto another directory keeps the
// digest, and a change moves it.
func TestSyncer_Sync_MarkerDigest(t *testing.T) {
	f := newFixture(t)
	src := f.syncer("", "")
	src.Generation = 1
	writeTree(t, src.Dir(), []node{
		{path: "a.txt", data: []byte("hello")},
		{path: "notes/b c.md", data: []byte("# b")},
		{path: "notes/z/deep.bin", data: randomBytes(3, 3000)},
		{path: "empty-dir", dir: true},
	})
	st := mustSync(t, src)
	m := st.Marker
	if m == nil || m.Generation != 1 || m.Files != 3 || m.Bytes != 3008 || len(m.Digest) != 64 {
		t.Fatalf("stats' marker %+v, want generation 1, 3 files, 3008 bytes and a digest", m)
	}
	if stored := f.marker(); stored == nil || *stored != *m {
		t.Fatalf("stored marker %+v, reported %+v", stored, m)
	}
	if want := sha256sumDigest(t, src.Dir()); want != "" && m.Digest != want {
		t.Fatalf("digest %s, sha256sum of the workspace says %s", m.Digest, want)
	}

	if again := mustSync(t, src); again.Marker != nil {
		t.Fatalf("a sync with nothing to do reported marker %+v", again.Marker)
	}

	dst := f.syncer("", "")
	dst.Generation = 2
	mustRestore(t, dst)
	next := mustSync(t, dst) // a new generation owes its marker, same files
	if next.Marker == nil || next.Marker.Generation != 2 || next.Marker.Digest != m.Digest {
		t.Fatalf("after the restore: marker %+v, want generation 2 and digest %s", next.Marker, m.Digest)
	}
	writeTree(t, dst.Dir(), []node{{path: "a.txt", data: []byte("hello, again")}})
	changed := mustSync(t, dst)
	if changed.Marker == nil || changed.Marker.Digest == m.Digest || changed.Marker.Files != 3 {
		t.Fatalf("after a change: marker %+v, want another digest over 3 files", changed.Marker)
	}
}

// An old marker, written before digests existed, still reads: restore and the next
// sync go on, and the next marker carries a digest.
func TestSyncer_Restore_MarkerWithoutDigest(t *testing.T) {
	f := newFixture(t)
	src := f.syncer("", "")
	src.Generation = 1
	writeTree(t, src.Dir(), []node{{path: "a.txt", data: []byte("hello")}})
	mustSync(t, src)
	f.putRaw(objsync.MarkerKey(f.prefix), `{"generation":1,"time":"2026-01-01T00:00:00Z","files":1,"bytes":5}`, map[string]string{"type": "marker", "generation": "1"})
	if m := f.marker(); m == nil || m.Digest != "" || m.Files != 1 {
		t.Fatalf("old marker reads as %+v", m)
	}
	dst := f.syncer("", "")
	dst.Generation = 2
	mustRestore(t, dst)
	if st := mustSync(t, dst); st.Marker == nil || st.Marker.Digest == "" {
		t.Fatalf("marker after an old one: %+v", st.Marker)
	}
}

// sha256sumDigest runs the pipeline digest's comment documents, or returns "" where
// the tools are missing.
func sha256sumDigest(t *testing.T, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("sha256sum"); err != nil {
		return ""
	}
	cmd := exec.Command("sh", "-c", `find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum`)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sha256sum pipeline: %v", err)
	}
	return strings.Fields(string(out))[0]
}
