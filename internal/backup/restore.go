package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
)

// Changes is what a restore changed in the prefix, by path.
type Changes struct {
	Added     []string `json:"added"`
	Replaced  []string `json:"replaced"`
	Deleted   []string `json:"deleted"`
	Unchanged int      `json:"unchanged"`
	// Copied and CopiedBytes count the server-side copies out of the backups.
	Copied      int   `json:"copied"`
	CopiedBytes int64 `json:"copiedBytes"`
}

// Verify checks, before anything is changed, that every content m names is in
// ObjectsDir with the size m says and the SHA-256 its metadata records (one HEAD per
// distinct content). A missing or different one is ErrCorrupt, naming the path.
func Verify(ctx context.Context, s Store, m *Manifest) error {
	var contents []Entry // one entry per distinct content
	seen := map[string]bool{}
	for _, e := range m.Entries {
		if e.Type != typeDir && !seen[e.SHA256] {
			seen[e.SHA256] = true
			contents = append(contents, e)
		}
	}
	return parallel(ctx, 0, len(contents), func(ctx context.Context, i int) error {
		e := contents[i]
		info, err := s.Head(ctx, ObjectKey(e.SHA256))
		switch {
		case errors.Is(err, objsync.ErrNotFound):
			return fmt.Errorf("%w: backup %s of %s: %s (content %s) is missing from the backups", ErrCorrupt, m.ID, m.UserID, e.Path, e.SHA256)
		case err != nil:
			return fmt.Errorf("verify backup %s of %s: %w", m.ID, m.UserID, err)
		case info.Size != e.Size:
			return fmt.Errorf("%w: backup %s of %s: %s: the stored content is %d bytes, the manifest says %d", ErrCorrupt, m.ID, m.UserID, e.Path, info.Size, e.Size)
		case objsync.ObjectSHA256(info.Meta) != e.SHA256:
			return fmt.Errorf("%w: backup %s of %s: %s: the stored content's SHA-256 is %q, the manifest says %s", ErrCorrupt, m.ID, m.UserID, e.Path, objsync.ObjectSHA256(info.Meta), e.SHA256)
		}
		return nil
	})
}

// Restore makes the user's prefix what m describes, under l; the caller holds the
// user's own lock, so no sandbox writes the prefix meanwhile. It verifies m first (a
// missing or corrupt backup changes nothing), then copies what differs out of the
// backups (server-side), deletes what m does not have, and writes the marker last,
// of generation gen (the user's current one) and time now. A restore that fails
// partway has written no marker, and running it again finishes it.
func Restore(ctx context.Context, s Store, l *Lock, m *Manifest, gen int64, now time.Time) (Changes, error) {
	var ch Changes
	if err := Verify(ctx, s, m); err != nil {
		return ch, err
	}
	prefix, err := objsync.UserPrefix(m.UserID)
	if err != nil {
		return ch, err
	}
	files := prefix + objsync.FilesDir
	objs, err := listAll(ctx, s, files)
	if err != nil {
		return ch, fmt.Errorf("restore %s: list: %w", m.UserID, err)
	}
	cur := map[string]objsync.ObjectInfo{}
	for _, o := range objs {
		rel := strings.TrimSuffix(strings.TrimPrefix(o.Key, files), "/")
		cur[rel] = o
	}
	type op struct {
		e   Entry
		key string
		o   objsync.ObjectInfo
		had bool
	}
	ops := make([]op, 0, len(m.Entries))
	for _, e := range m.Entries {
		key := files + e.Path
		if e.Type == typeDir {
			key += "/"
		}
		o, had := cur[e.Path]
		delete(cur, e.Path)
		ops = append(ops, op{e: e, key: key, o: o, had: had})
	}
	var mu sync.Mutex
	err = parallel(ctx, 0, len(ops), func(ctx context.Context, i int) error {
		p := ops[i]
		if err := l.Check(); err != nil {
			return err
		}
		if p.had && p.o.Key == p.key {
			same, err := sameObject(ctx, s, p.o, p.e)
			if err != nil {
				return err
			}
			if same {
				mu.Lock()
				ch.Unchanged++
				mu.Unlock()
				return nil
			}
		}
		if p.had && p.o.Key != p.key { // a file where a directory was, or the other way
			if err := s.Delete(ctx, []string{p.o.Key}); err != nil {
				return err
			}
		}
		var err error
		if p.e.Type == typeDir {
			_, err = s.Put(ctx, objsync.PutInput{Key: p.key, Body: bytes.NewReader(nil), Meta: p.e.Meta})
		} else {
			err = s.Copy(ctx, objsync.CopyInput{Src: ObjectKey(p.e.SHA256), Dst: p.key, Size: p.e.Size, Meta: p.e.Meta})
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p.e.Path, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if p.e.Type != typeDir {
			ch.Copied++
			ch.CopiedBytes += p.e.Size
		}
		if p.had {
			ch.Replaced = append(ch.Replaced, p.e.Path)
		} else {
			ch.Added = append(ch.Added, p.e.Path)
		}
		return nil
	})
	if err != nil {
		return ch, fmt.Errorf("restore %s: %w", m.UserID, err)
	}
	extra := slices.Sorted(maps.Keys(cur))
	for len(extra) > 0 {
		batch := extra[:min(len(extra), objsync.MaxDeleteBatch)]
		extra = extra[len(batch):]
		keys := make([]string, len(batch))
		for i, rel := range batch {
			keys[i] = cur[rel].Key
		}
		if err := s.Delete(ctx, keys); err != nil {
			return ch, fmt.Errorf("restore %s: %w", m.UserID, err)
		}
		ch.Deleted = append(ch.Deleted, batch...)
	}
	marker := objsync.Marker{Generation: gen, Time: now.UTC(), Files: m.Files, Bytes: m.Bytes}
	key, body, meta, err := objsync.MarkerObject(prefix, marker)
	if err != nil {
		return ch, err
	}
	if err := l.Check(); err != nil {
		return ch, fmt.Errorf("restore %s: %w", m.UserID, err)
	}
	if _, err := s.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta}); err != nil {
		return ch, fmt.Errorf("restore %s: write marker: %w", m.UserID, err)
	}
	sort.Strings(ch.Added)
	sort.Strings(ch.Replaced)
	return ch, nil
}

// sameObject reports whether the listed object o already is e: same content and the
// same metadata (a HEAD when the listing alone cannot say).
func sameObject(ctx context.Context, s Store, o objsync.ObjectInfo, e Entry) (bool, error) {
	if o.Size != e.Size {
		return false, nil
	}
	if o.ETag == e.ETag && o.LastModified.Equal(e.LastModified) {
		return true, nil
	}
	info, err := s.Head(ctx, o.Key)
	if err != nil {
		return false, err
	}
	for k, v := range e.Meta {
		if info.Meta[k] != v {
			return false, nil
		}
	}
	return e.Type == typeDir || objsync.ObjectSHA256(info.Meta) == e.SHA256, nil
}
