package backup_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// env is s3local behind a handler that counts server-side copies and can start
// failing them after a number, through s3local's own fault switch.
type env struct {
	srv    *s3local.Server
	bucket *s3bucket.Bucket
	clock  *testkit.Clock
	copies atomic.Int64
	// failAfter, when > 0, makes every PUT after that many copies answer 500.
	failAfter atomic.Int64
	faulted   sync.Once
	mu        sync.Mutex
	before    sync.WaitGroup // the copies before the fault
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := s3local.Start(s3local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e := &env{srv: srv, clock: testkit.NewClock()}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "" {
			e.mu.Lock()
			n := e.copies.Add(1)
			first := e.failAfter.Load() > 0 && n <= e.failAfter.Load()
			if first {
				e.before.Add(1)
			}
			e.mu.Unlock()
			if first {
				defer e.before.Done()
			} else if e.failAfter.Load() > 0 {
				// Copies run in parallel: the first ones finish before S3 starts failing.
				e.before.Wait()
				e.faulted.Do(func() {
					if err := srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError}); err != nil {
						t.Error(err)
					}
				})
			}
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(ts.URL)...)
	if err != nil {
		t.Fatal(err)
	}
	e.bucket = s3bucket.New(s3bucket.NewClient(cfg, s3bucket.Options{UsePathStyle: true, MaxAttempts: 2, MaxBackoff: time.Millisecond}), srv.Bucket())
	return e
}

func (e *env) pass(r backup.Retention) *backup.Pass {
	return &backup.Pass{Backer: backup.Backer{Store: e.bucket, Now: e.clock.Now}, Retention: r, Holder: "test"}
}

// workspace is a user's directory synced to their prefix by objsync, as an agent does.
type workspace struct {
	t   *testing.T
	dir string
	s   *objsync.Syncer
}

func newWorkspace(t *testing.T, b objsync.Bucket, user string) *workspace {
	t.Helper()
	root := t.TempDir()
	prefix, err := objsync.UserPrefix(user)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "ws")
	s, err := objsync.New(b, prefix, dir, filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &workspace{t: t, dir: dir, s: s}
}

func (w *workspace) write(files map[string]string) {
	w.t.Helper()
	for rel, body := range files {
		p := filepath.Join(w.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			w.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *workspace) remove(rels ...string) {
	w.t.Helper()
	for _, rel := range rels {
		if err := os.Remove(filepath.Join(w.dir, filepath.FromSlash(rel))); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *workspace) sync() {
	w.t.Helper()
	if _, err := w.s.Sync(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

// restored restores the user's prefix into a fresh directory, as a new sandbox does,
// and returns its regular files.
func restored(t *testing.T, b objsync.Bucket, user string) map[string]string {
	t.Helper()
	w := newWorkspace(t, b, user)
	got := map[string]string{}
	err := filepath.WalkDir(w.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(w.dir, p)
		got[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func keys(t *testing.T, b objsync.Bucket, prefix string) []string {
	t.Helper()
	var out []string
	token := ""
	for {
		page, err := b.List(context.Background(), prefix, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Objects {
			out = append(out, o.Key)
		}
		if page.Next == "" {
			return out
		}
		token = page.Next
	}
}
