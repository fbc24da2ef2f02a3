package objsync_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// hookBucket runs before once, before the first Put whose key matches once before is
// set (arm).
type hookBucket struct {
	objsync.Bucket
	match  func(key string) bool
	mu     sync.Mutex
	before func()
	once   sync.Once
}

func (h *hookBucket) arm(before func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.before = before
}

func (h *hookBucket) Put(ctx context.Context, in objsync.PutInput) (string, error) {
	h.mu.Lock()
	before := h.before
	h.mu.Unlock()
	if before != nil && h.match(in.Key) {
		h.once.Do(before)
	}
	return h.Bucket.Put(ctx, in)
}

// syncerOn returns a Syncer of the fixture's prefix over b, of generation gen, in
// fresh directories.
func (f *fixture) syncerOn(b objsync.Bucket, gen int64) *objsync.Syncer {
	f.t.Helper()
	s, err := objsync.New(b, f.prefix, filepath.Join(f.t.TempDir(), "work"), filepath.Join(f.t.TempDir(), "state"))
	if err != nil {
		f.t.Fatal(err)
	}
	s.Log, s.Generation = f.log, gen
	return s
}

// stored is every object under the prefix: its bytes and metadata, by key.
type stored map[string]string

func (f *fixture) stored() stored {
	f.t.Helper()
	out := stored{}
	for _, k := range f.keys() {
		info, body, err := f.bucket.Bucket.Get(context.Background(), f.prefix+k)
		if err != nil {
			f.t.Fatal(err)
		}
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		out[k] = string(b) + " " + info.ETag + " " + info.Meta["generation"]
	}
	return out
}

func sameStored(t *testing.T, what string, want, got stored) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s is %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// A stale sandbox (generation 1) whose marker check passed before its successor
// (generation 2) wrote cannot overwrite the successor's objects: its write of a file
// both changed is refused (If-Match the ETag it restored), so is its write of a new
// file the successor created too (If-None-Match: *); the sync stops with ErrFenced,
// writes no marker, and the bucket is byte for byte what the successor left.
func TestSyncer_Sync_StaleWriterCannotOverwriteSuccessor(t *testing.T) {
	f := newFixture(t)
	var b *objsync.Syncer
	var after stored
	hook := &hookBucket{Bucket: f.bucket, match: func(string) bool { return true }}
	a := f.syncerOn(hook, 1)
	writeTree(t, a.Dir(), []node{{path: "a", data: []byte("a from generation 1")}, {path: "keep", data: []byte("untouched")}})
	mustSync(t, a)

	b = f.syncerOn(f.bucket, 2)
	mustRestore(t, b)
	// Once the stale sync has passed its checks and is about to write, the successor
	// writes the same paths and finishes a sync.
	hook.arm(func() {
		writeTree(t, b.Dir(), []node{
			{path: "a", data: []byte("a from generation 2"), mtime: baseTime.Add(2 * time.Hour)},
			{path: "c", data: []byte("c from generation 2"), mtime: baseTime.Add(2 * time.Hour)},
		})
		mustSync(t, b)
		after = f.stored()
	})
	writeTree(t, a.Dir(), []node{
		{path: "a", data: []byte("a, stale"), mtime: baseTime.Add(3 * time.Hour)},
		{path: "c", data: []byte("c, stale"), mtime: baseTime.Add(3 * time.Hour)},
	})
	a.Concurrency = 1
	_, err := a.Sync(context.Background())
	if !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale sync: %v, want ErrFenced", err)
	}
	if after == nil {
		t.Fatal("the stale sync never tried to write")
	}
	sameStored(t, "after the stale sync", after, f.stored())
	if m := f.marker(); m.Generation != 2 {
		t.Fatalf("marker generation %d", m.Generation)
	}
	if lines := f.logs.With(t, "generation", 2.0); len(lines) == 0 || !strings.Contains(f.logs.String(), "a newer generation wrote the object") {
		t.Fatalf("the refusal is not logged: %s", f.logs.String())
	}
	// Its next sync is fenced before writing anything, by the successor's marker.
	puts := f.srv.Faults.Requests(http.MethodPut)
	if _, err := a.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("next stale sync: %v, want ErrFenced", err)
	}
	if n := f.srv.Faults.Requests(http.MethodPut); n != puts {
		t.Fatalf("%d PUTs by the fenced writer", n-puts)
	}
	sameStored(t, "after the next stale sync", after, f.stored())
}

// The marker is written If-Match the marker the writer read: a successor's marker
// written after the stale sync's last check still wins, byte for byte.
func TestSyncer_Sync_StaleMarkerRefused(t *testing.T) {
	f := newFixture(t)
	var after stored
	hook := &hookBucket{Bucket: f.bucket, match: func(k string) bool { return strings.HasSuffix(k, objsync.MarkerName) }}
	a := f.syncerOn(hook, 1)
	writeTree(t, a.Dir(), []node{{path: "a", data: []byte("a")}})
	mustSync(t, a)

	b := f.syncerOn(f.bucket, 2)
	mustRestore(t, b)
	hook.arm(func() {
		writeTree(t, b.Dir(), []node{{path: "b", data: []byte("b from generation 2")}})
		mustSync(t, b)
		after = f.stored()
	})
	writeTree(t, a.Dir(), []node{{path: "late", data: []byte("late, stale")}})
	if _, err := a.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale sync: %v, want ErrFenced", err)
	}
	got := f.stored()
	if after[objsync.MarkerName] == "" || got[objsync.MarkerName] != after[objsync.MarkerName] {
		t.Fatalf("marker %q, the successor wrote %q", got[objsync.MarkerName], after[objsync.MarkerName])
	}
	for k, v := range after {
		if got[k] != v {
			t.Errorf("%s is %q, the successor left %q", k, got[k], v)
		}
	}
}

// The newest generation always wins: a stale writer's writes that landed before the
// successor wrote those keys (the stale marker included) are written over by the
// successor, which then owns the prefix; the stale writer is fenced from then on.
func TestSyncer_Sync_SuccessorWritesOverStaleWrites(t *testing.T) {
	f := newFixture(t)
	a := f.syncerOn(f.bucket, 1)
	writeTree(t, a.Dir(), []node{{path: "doc", data: []byte("v1")}})
	mustSync(t, a)
	b := f.syncerOn(f.bucket, 2)
	mustRestore(t, b)

	// The stale writer's sync lands between the successor's restore and its first
	// write: the successor had not written yet, so nothing refuses it.
	writeTree(t, a.Dir(), []node{{path: "doc", data: []byte("v1, stale"), mtime: baseTime.Add(time.Hour)}})
	mustSync(t, a)
	if m := f.marker(); m.Generation != 1 {
		t.Fatalf("marker generation %d", m.Generation)
	}

	writeTree(t, b.Dir(), []node{{path: "doc", data: []byte("v2"), mtime: baseTime.Add(2 * time.Hour)}})
	mustSync(t, b)
	if got := f.stored(); !strings.HasPrefix(got["files/doc"], "v2 ") || !strings.HasSuffix(got["files/doc"], " 2") {
		t.Fatalf("doc is %q, want the successor's", got["files/doc"])
	}
	if m := f.marker(); m.Generation != 2 {
		t.Fatalf("marker generation %d, want the successor's", m.Generation)
	}
	if !strings.Contains(f.logs.String(), "changed by an older writer") {
		t.Fatalf("the older writer's objects are not logged: %s", f.logs.String())
	}
	writeTree(t, a.Dir(), []node{{path: "doc", data: []byte("v1, staler"), mtime: baseTime.Add(3 * time.Hour)}})
	if _, err := a.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale sync after the successor's: %v, want ErrFenced", err)
	}
}

// Deletes carry no condition; the marker is read again right before each delete
// batch, so a stale sync whose uploads went through deletes nothing once the
// successor has written its marker.
func TestSyncer_Sync_StaleDeleteStoppedByMarker(t *testing.T) {
	f := newFixture(t)
	hook := &hookBucket{Bucket: f.bucket, match: func(k string) bool { return strings.HasSuffix(k, "/files/u") }}
	a := f.syncerOn(hook, 1)
	writeTree(t, a.Dir(), []node{{path: "u", data: []byte("u")}, {path: "d", data: []byte("d")}})
	mustSync(t, a)
	b := f.syncerOn(f.bucket, 2)
	mustRestore(t, b)
	hook.arm(func() { mustSync(t, b) }) // the successor's first sync: its marker
	writeTree(t, a.Dir(), []node{{path: "u", data: []byte("u, stale"), mtime: baseTime.Add(time.Hour)}})
	if err := os.Remove(filepath.Join(a.Dir(), "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(context.Background()); !errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("stale sync: %v, want ErrFenced", err)
	}
	if got := f.stored(); got["files/d"] == "" {
		t.Fatal("the stale writer deleted d after the successor's marker")
	}
}

// lostAnswers forwards requests to the store; the first PUT of each key in lose is
// applied but answered 500, as when the store's answer is lost on the way back.
type lostAnswers struct {
	proxy *httputil.ReverseProxy
	lose  map[string]bool
	mu    sync.Mutex
	lost  atomic.Int32
}

func (l *lostAnswers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	drop := r.Method == http.MethodPut && l.lose[r.URL.Path]
	if drop {
		delete(l.lose, r.URL.Path)
	}
	l.mu.Unlock()
	if !drop {
		l.proxy.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	l.proxy.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		panic("the store refused the write to be lost: " + rec.Body.String())
	}
	l.lost.Add(1)
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>lost</Message></Error>`))
}

// A write the store applied but whose answer was lost meets itself when the SDK sends
// it again: the refusal is resolved as this writer's own object, not a successor's, and
// the sync finishes. The same for a write an earlier sync gave up on.
func TestSyncer_Sync_OwnWriteWhoseAnswerWasLost(t *testing.T) {
	f := newFixture(t)
	target, _ := url.Parse(f.srv.URL())
	lose := &lostAnswers{proxy: httputil.NewSingleHostReverseProxy(target), lose: map[string]bool{}}
	ts := httptest.NewServer(lose)
	t.Cleanup(ts.Close)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(ts.URL)...)
	if err != nil {
		t.Fatal(err)
	}
	bucket := s3bucket.New(s3bucket.NewClient(cfg, s3bucket.Options{UsePathStyle: true, MaxAttempts: 3, MaxBackoff: time.Millisecond}), f.srv.Bucket())
	s := f.syncerOn(bucket, 7)
	path := func(rel string) string { return "/" + f.srv.Bucket() + "/" + f.prefix + rel }

	// New file and marker: the retry's If-None-Match meets the first attempt's object.
	lose.mu.Lock()
	lose.lose[path("files/new")], lose.lose[path(objsync.MarkerName)] = true, true
	lose.mu.Unlock()
	writeTree(t, s.Dir(), []node{{path: "new", data: []byte("one")}})
	mustSync(t, s)
	// A changed file and the marker again: the retry's If-Match names the old ETag.
	lose.mu.Lock()
	lose.lose[path("files/new")], lose.lose[path(objsync.MarkerName)] = true, true
	lose.mu.Unlock()
	writeTree(t, s.Dir(), []node{{path: "new", data: []byte("two"), mtime: baseTime.Add(time.Hour)}})
	mustSync(t, s)
	if n := lose.lost.Load(); n != 4 {
		t.Fatalf("%d answers lost, want 4", n)
	}

	// A sync that gave up on a write the store applied (every attempt's answer lost
	// but the first applied); the next sync meets it as its own.
	failing := &failAfterPut{Bucket: bucket, key: f.prefix + "files/new"}
	s2, err := objsync.New(failing, f.prefix, s.Dir(), s.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	s2.Log, s2.Generation = f.log, 7
	writeTree(t, s.Dir(), []node{{path: "new", data: []byte("three"), mtime: baseTime.Add(2 * time.Hour)}})
	if _, err := s2.Sync(context.Background()); err == nil || errors.Is(err, objsync.ErrFenced) {
		t.Fatalf("sync whose write failed: %v, want a failure that is not a fence", err)
	}
	writeTree(t, s.Dir(), []node{{path: "new", data: []byte("four"), mtime: baseTime.Add(3 * time.Hour)}})
	mustSync(t, s2)
	dst := f.syncerOn(f.bucket, 8)
	mustRestore(t, dst)
	if b, err := os.ReadFile(filepath.Join(dst.Dir(), "new")); err != nil || !bytes.Equal(b, []byte("four")) {
		t.Fatalf("restored %q, %v", b, err)
	}
	if m := f.marker(); m.Generation != 7 {
		t.Fatalf("marker generation %d", m.Generation)
	}
}

// failAfterPut applies the first Put of key and then reports it failed.
type failAfterPut struct {
	objsync.Bucket
	key  string
	done atomic.Bool
}

func (b *failAfterPut) Put(ctx context.Context, in objsync.PutInput) (string, error) {
	etag, err := b.Bucket.Put(ctx, in)
	if err == nil && in.Key == b.key && b.done.CompareAndSwap(false, true) {
		return "", errors.New("connection reset after the request was sent")
	}
	return etag, err
}
