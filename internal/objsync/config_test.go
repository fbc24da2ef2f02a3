package objsync_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/objsync"
)

func TestUserPrefix(t *testing.T) {
	if p, err := objsync.UserPrefix("user_abc123"); err != nil || p != "users/user_abc123/" {
		t.Fatalf("%q, %v", p, err)
	}
	for _, id := range []string{"", "user_", "abc", "user_a/b", "user_../x", "user_é"} {
		if _, err := objsync.UserPrefix(id); !errors.Is(err, objsync.ErrConfig) {
			t.Errorf("UserPrefix(%q): want ErrConfig, got %v", id, err)
		}
	}
}

func TestNew_BadInput(t *testing.T) {
	f := newFixture(t)
	base := t.TempDir()
	dir, state := filepath.Join(base, "work"), filepath.Join(base, "state")
	cases := []struct {
		name                 string
		bucket               objsync.Bucket
		prefix, dir, stateDr string
		want                 string
	}{
		{"no trailing slash", f.bucket, "users/user_a", dir, state, "must end with /"},
		{"empty prefix", f.bucket, "", dir, state, "empty prefix"},
		{"empty user", f.bucket, "users//", dir, state, "empty"},
		{"one segment", f.bucket, "users/", dir, state, "fewer than 2"},
		{"leading slash", f.bucket, "/users/user_a/", dir, state, "empty"},
		{"dot-dot", f.bucket, "users/../user_a/", dir, state, ".."},
		{"relative dir", f.bucket, f.prefix, "work", state, "absolute"},
		{"state inside dir", f.bucket, f.prefix, dir, filepath.Join(dir, ".state"), "outside"},
		{"dir inside state", f.bucket, f.prefix, filepath.Join(state, "w"), state, "outside"},
		{"same dir", f.bucket, f.prefix, dir, dir + "/", "outside"},
		{"nil bucket", nil, f.prefix, dir, state, "nil bucket"},
	}
	for _, c := range cases {
		_, err := objsync.New(c.bucket, c.prefix, c.dir, c.stateDr)
		if !errors.Is(err, objsync.ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want ErrConfig mentioning %q, got %v", c.name, c.want, err)
		}
	}
	if got := f.keys(); len(got) != 0 {
		t.Fatalf("bad input wrote %v", got)
	}
	s := f.syncer(dir, state)
	s.Concurrency = -1
	if _, err := s.Sync(context.Background()); !errors.Is(err, objsync.ErrConfig) {
		t.Fatalf("negative concurrency: %v", err)
	}
}

func TestDeletePrefix_RemovesOnlyThatPrefix(t *testing.T) {
	f := newFixture(t)
	for i := range 2100 {
		f.putRaw(fmt.Sprintf("%sfiles/f%04d", f.prefix, i), "x", nil)
	}
	f.putRaw(objsync.MarkerKey(f.prefix), "{}", nil)
	f.putRaw("users/user_other/files/keep", "x", nil)
	f.putRaw("users/user_test2/files/keep", "x", nil) // shares the prefix's leading characters

	n, err := objsync.DeletePrefix(context.Background(), f.bucket, f.prefix)
	if err != nil || n != 2101 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Fatalf("%d keys left", len(keys))
	}
	for _, batch := range f.bucket.deletes {
		if len(batch) > objsync.MaxDeleteBatch {
			t.Fatalf("batch of %d", len(batch))
		}
	}
	var others []string
	for _, p := range []string{"users/user_other/", "users/user_test2/"} {
		page, err := f.bucket.List(context.Background(), p, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Objects {
			others = append(others, o.Key)
		}
	}
	if !slices.Equal(others, []string{"users/user_other/files/keep", "users/user_test2/files/keep"}) {
		t.Fatalf("other users' keys: %v", others)
	}
	for _, bad := range []string{"", "users/", "users", "users//"} {
		if _, err := objsync.DeletePrefix(context.Background(), f.bucket, bad); !errors.Is(err, objsync.ErrConfig) {
			t.Errorf("DeletePrefix(%q): want ErrConfig, got %v", bad, err)
		}
	}
}
