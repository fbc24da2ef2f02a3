package stack

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// The stack's root is traversable but not listable, and what it holds but the tasks'
// root is its owner's alone, whatever mode it was made with.
func TestLockDownRoot_OnlyTheTasksRootStaysReachable(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"dynamodb", "s3", tasksDir} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{AWSEnvFile, filepath.Join("dynamodb", "shared-local-instance.db")} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := lockDownRoot(root); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		"": 0o711, "dynamodb": 0o700, "s3": 0o700, AWSEnvFile: 0o600, tasksDir: 0o755,
	} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%q: %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
}

// The demo page's dev-only endpoints refuse connections from task addresses (an
// isolated task's connections come from its address); its page and this machine's
// own processes are served.
func TestDevOnlyMux_DevEndpointsRefuseTasks(t *testing.T) {
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	m := devOnlyMux{gateway: mux, tasks: netip.MustParsePrefix("127.77.1.0/24")}
	m.Handle("GET /{$}", ok)
	m.Handle("GET /dev/sign", ok)
	m.Handle("POST /dev/restart", ok)
	for _, c := range []struct {
		method, path, from string
		want               int
	}{
		{"GET", "/dev/sign", "127.77.1.9:4000", http.StatusForbidden},
		{"POST", "/dev/restart", "127.77.1.9:4000", http.StatusForbidden},
		{"GET", "/dev/sign", "127.0.0.1:4000", http.StatusOK},
		{"GET", "/", "127.77.1.9:4000", http.StatusOK},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		req.RemoteAddr = c.from
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s %s from %s: %d, want %d", c.method, c.path, c.from, rec.Code, c.want)
		}
	}
}
