package objsync_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

const testUser = "user_test"

// countingBucket passes every call to the real bucket and remembers what was asked.
type countingBucket struct {
	objsync.Bucket
	mu      sync.Mutex
	lists   int
	gets    int
	puts    []string
	deletes [][]string
}

func (c *countingBucket) List(ctx context.Context, prefix, token string) (objsync.Page, error) {
	c.mu.Lock()
	c.lists++
	c.mu.Unlock()
	return c.Bucket.List(ctx, prefix, token)
}

func (c *countingBucket) Get(ctx context.Context, key string) (objsync.ObjectInfo, io.ReadCloser, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.Bucket.Get(ctx, key)
}

func (c *countingBucket) Put(ctx context.Context, in objsync.PutInput) (string, error) {
	c.mu.Lock()
	c.puts = append(c.puts, in.Key)
	c.mu.Unlock()
	return c.Bucket.Put(ctx, in)
}

func (c *countingBucket) Delete(ctx context.Context, keys []string) error {
	c.mu.Lock()
	c.deletes = append(c.deletes, append([]string(nil), keys...))
	c.mu.Unlock()
	return c.Bucket.Delete(ctx, keys)
}

// calls returns how many calls of each kind were made so far.
func (c *countingBucket) calls() (lists, gets, puts, deletes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lists, c.gets, len(c.puts), len(c.deletes)
}

// fixture is one gofakes3 endpoint reached through the production client stack.
type fixture struct {
	t      *testing.T
	s3     *testkit.S3
	srv    *s3local.Server // s3.Server
	bucket *countingBucket
	prefix string
	logs   *testkit.Logs
	log    *slog.Logger
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, s3bucket.Options{
		UsePathStyle: true, MaxAttempts: 4, MaxBackoff: 5 * time.Millisecond, ResponseHeaderTimeout: 5 * time.Second,
	})
}

// newFixtureWith builds the client with o instead of the tests' default options.
func newFixtureWith(t *testing.T, o s3bucket.Options) *fixture {
	t.Helper()
	s3 := testkit.StartS3(t, s3local.Config{})
	prefix, err := objsync.UserPrefix(testUser)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Logs{}
	return &fixture{
		t:      t,
		s3:     s3,
		srv:    s3.Server,
		bucket: &countingBucket{Bucket: s3.Bucket(o)},
		prefix: prefix,
		logs:   logs,
		log:    logs.Logger().With(logging.UserID, testUser),
	}
}

// bucketWith returns another client of the fixture's endpoint, built with o.
func (f *fixture) bucketWith(o s3bucket.Options) objsync.Bucket {
	f.t.Helper()
	return f.s3.Bucket(o)
}

// syncer returns a Syncer over a fresh (or given) directory and state directory.
func (f *fixture) syncer(dir, stateDir string) *objsync.Syncer {
	f.t.Helper()
	if dir == "" {
		dir = filepath.Join(f.t.TempDir(), "work")
	}
	if stateDir == "" {
		stateDir = filepath.Join(f.t.TempDir(), "state")
	}
	s, err := objsync.New(f.bucket, f.prefix, dir, stateDir)
	if err != nil {
		f.t.Fatal(err)
	}
	s.Log = f.log
	return s
}

// keys lists every key under the user's prefix.
func (f *fixture) keys() []string {
	f.t.Helper()
	var keys []string
	token := ""
	for {
		page, err := f.bucket.Bucket.List(context.Background(), f.prefix, token)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, o := range page.Objects {
			keys = append(keys, strings.TrimPrefix(o.Key, f.prefix))
		}
		if page.Next == "" {
			return keys
		}
		token = page.Next
	}
}

// marker returns the bucket's .last-sync, or nil.
func (f *fixture) marker() *objsync.Marker {
	f.t.Helper()
	_, body, err := f.bucket.Bucket.Get(context.Background(), objsync.MarkerKey(f.prefix))
	if errors.Is(err, objsync.ErrNotFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	defer body.Close()
	var m objsync.Marker
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		f.t.Fatal(err)
	}
	return &m
}

// putRaw stores an object directly, as another tool or an attacker would.
func (f *fixture) putRaw(key, body string, meta map[string]string) {
	f.t.Helper()
	_, err := f.bucket.Bucket.Put(context.Background(), objsync.PutInput{
		Key: key, Body: strings.NewReader(body), Size: int64(len(body)), Meta: meta,
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// node is one path of a test tree.
type node struct {
	path  string
	data  []byte
	mode  fs.FileMode
	mtime time.Time
	link  string // a symlink to this target
	dir   bool   // an (empty) directory
}

var baseTime = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// writeTree creates nodes under dir, with their modes and mtimes.
func writeTree(t *testing.T, dir string, nodes []node) {
	t.Helper()
	for i, n := range nodes {
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := n.mode
		switch {
		case n.link != "":
			if err := os.Symlink(n.link, p); err != nil {
				t.Fatal(err)
			}
			continue
		case n.dir:
			if mode == 0 {
				mode = 0o755
			}
			if err := os.Mkdir(p, mode); err != nil {
				t.Fatal(err)
			}
		default:
			if mode == 0 {
				mode = 0o644
			}
			if err := os.WriteFile(p, n.data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		mt := n.mtime
		if mt.IsZero() {
			mt = baseTime.Add(time.Duration(i)*time.Minute + time.Duration(i*7919)*time.Nanosecond)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

// snap is what a restore must reproduce for one path.
type snap struct {
	Kind  string
	Size  int64
	Mode  fs.FileMode
	MTime int64
	Hash  string // content (files) or target (links)
}

// snapshot describes every file, symlink and empty directory under dir, skipping
// names that start with skip (none when empty).
func snapshot(t *testing.T, dir string) map[string]snap {
	t.Helper()
	out := map[string]snap{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = snap{Kind: "link", Hash: target}
		case info.IsDir():
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				out[rel+"/"] = snap{Kind: "dir", Mode: info.Mode().Perm(), MTime: info.ModTime().UnixNano()}
			}
		default:
			h := sha256.New()
			fh, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return err
			}
			out[rel] = snap{Kind: "file", Size: info.Size(), Mode: info.Mode().Perm(), MTime: info.ModTime().UnixNano(),
				Hash: hex.EncodeToString(h.Sum(nil))}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails the test with a readable difference when two snapshots differ.
func sameTree(t *testing.T, want, got map[string]snap) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, "missing "+p)
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s: got %+v, want %+v", p, g, w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "extra "+p)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
		}
		t.Fatalf("trees differ:\n%s", strings.Join(diffs, "\n"))
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	r := rand.NewChaCha8(key)
	_, _ = r.Read(b)
	return b
}

func mustSync(t *testing.T, s *objsync.Syncer) objsync.Stats {
	t.Helper()
	st, err := s.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return st
}

func mustRestore(t *testing.T, s *objsync.Syncer) objsync.Stats {
	t.Helper()
	st, err := s.Restore(context.Background())
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return st
}
