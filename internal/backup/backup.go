package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
)

// DefaultConcurrency is how many requests one backup has in flight: server-side copies
// cost the caller no bandwidth, so their latency is what bounds a backup.
const DefaultConcurrency = 16

// Backer makes backups. Store is required.
type Backer struct {
	Store Store
	Log   *slog.Logger
	// Concurrency is DefaultConcurrency when zero.
	Concurrency int
	// Now is the clock manifests are named by (time.Now when nil).
	Now func() time.Time
}

// Result is what one user's backup did.
type Result struct {
	UserID string `json:"userId"`
	// ID is the new backup's id; empty when none was made (Unchanged, or an error).
	ID string `json:"id,omitempty"`
	// Unchanged: the newest backup already holds the marker's sync; nothing was done.
	Unchanged bool  `json:"unchanged,omitempty"`
	Files     int   `json:"files"`
	Bytes     int64 `json:"bytes"`
	// Copied and CopiedBytes count the contents copied into ObjectsDir (new to the
	// backups); the rest were there already.
	Copied      int   `json:"copied"`
	CopiedBytes int64 `json:"copiedBytes"`
	// Requests counts the store requests the backup made.
	Requests int `json:"requests"`
}

// Options of one backup.
type Options struct {
	// Locked says the caller holds the user's lock (a restore: no sandbox can write),
	// so the prefix is taken as it is, marker or not, and even if unchanged.
	Locked bool
	// Reason is written in the manifest.
	Reason string
	// Known are contents known to be in ObjectsDir already (this pass's copies), by
	// SHA-256; Backup adds what it copies. May be nil.
	Known map[string]bool
}

func (b *Backer) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// parallel runs fn(0..n-1) on at most Concurrency goroutines and returns the first
// error; after one, no further call starts.
func (b *Backer) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	return parallel(ctx, b.Concurrency, n, fn)
}

// parallel runs fn(0..n-1) on at most workers goroutines (DefaultConcurrency when
// zero) and returns the first error; after one, no further call starts.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

func (b *Backer) log() *slog.Logger {
	if b.Log != nil {
		return b.Log
	}
	return slog.Default()
}

// Backup backs up the user's prefix, under l. It copies a state the sandbox finished
// syncing, or nothing:
//
//  1. read the marker (generation, time, ETag and the object's LastModified); none is
//     ErrNoMarker; the same ETag as the newest backup's is Unchanged;
//  2. list users/<id>/files/: every object must be no newer than the marker (a sync
//     writes its files, then the marker last: a newer object is a sync in progress,
//     or one that failed), and the files and bytes must be the marker's (a sync's
//     deletions leave no date behind; they change the count);
//  3. copy each content not yet in ObjectsDir, conditional on the source's listed
//     ETag (x-amz-copy-source-if-match), so a file overwritten meanwhile is refused
//     rather than stored under a hash it does not have;
//  4. read the marker again: another ETag means a sync finished meanwhile;
//  5. write the manifest, last (If-None-Match: *).
//
// Any check that fails is ErrChanged, with no manifest written: the contents already
// copied stay in ObjectsDir, where the next attempt finds them (nothing copied twice)
// or the sweep removes them. With opts.Locked, steps 1, 2 and 4 are skipped.
func (b *Backer) Backup(ctx context.Context, l *Lock, userID string, opts Options) (Result, error) {
	res := Result{UserID: userID}
	prefix, err := objsync.UserPrefix(userID)
	if err != nil {
		return res, err
	}
	log := b.log().With(logging.UserID, userID)
	if opts.Known == nil {
		opts.Known = map[string]bool{}
	}
	var (
		marker     objsync.Marker
		markerInfo objsync.ObjectInfo
	)
	if !opts.Locked {
		res.Requests++
		markerInfo, marker, err = readMarker(ctx, b.Store, prefix)
		if err != nil {
			return res, fmt.Errorf("back up %s: %w", userID, err)
		}
	}
	refs, err := List(ctx, b.Store, userID)
	res.Requests++
	if err != nil {
		return res, fmt.Errorf("back up %s: %w", userID, err)
	}
	// The newest backup: its entries spare looks at objects it already describes.
	prev := map[string]Entry{}
	if len(refs) > 0 {
		newest := refs[len(refs)-1]
		if !opts.Locked && newest.MarkerETag == markerInfo.ETag {
			res.Unchanged = true
			return res, nil
		}
		res.Requests++
		m, err := Load(ctx, b.Store, newest)
		switch {
		case err == nil:
			for _, e := range m.Entries {
				prev[e.Path] = e
				if e.SHA256 != "" {
					opts.Known[e.SHA256] = true
				}
			}
		case errors.Is(err, ErrCorrupt):
			log.Warn("newest backup unreadable; backing up without it", logging.Error, err.Error())
		default:
			return res, fmt.Errorf("back up %s: %w", userID, err)
		}
	}
	objs, err := listAll(ctx, b.Store, prefix+objsync.FilesDir)
	res.Requests += 1 + len(objs)/1000
	if err != nil {
		return res, fmt.Errorf("back up %s: list: %w", userID, err)
	}
	m := &Manifest{Version: manifestVersion, UserID: userID, Marker: marker, MarkerETag: markerInfo.ETag, Reason: opts.Reason,
		Entries: make([]Entry, len(objs))}
	var look []int // entries the newest backup does not describe: a HEAD each
	for i, o := range objs {
		// To the second: a GET's Last-Modified header has no finer grain than that.
		if !opts.Locked && o.LastModified.Truncate(time.Second).After(markerInfo.LastModified.Truncate(time.Second)) {
			return res, fmt.Errorf("back up %s: %w: %s is newer than the marker (a sync is in progress or failed)", userID, ErrChanged, o.Key)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(o.Key, prefix+objsync.FilesDir), "/")
		if e, ok := prev[rel]; ok && e.ETag == o.ETag && e.LastModified.Equal(o.LastModified) && e.Size == o.Size {
			m.Entries[i] = e
			continue
		}
		look = append(look, i)
	}
	var requests atomic.Int64
	err = b.parallel(ctx, len(look), func(ctx context.Context, j int) error {
		i := look[j]
		o := objs[i]
		rel, isDir := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix+objsync.FilesDir), "/")
		requests.Add(1)
		e, err := describe(ctx, b.Store, o, rel, isDir)
		if errors.Is(err, objsync.ErrNotFound) {
			return fmt.Errorf("%w: %s was deleted", ErrChanged, o.Key)
		}
		m.Entries[i] = e
		return err
	})
	res.Requests += int(requests.Swap(0))
	if err != nil {
		return res, fmt.Errorf("back up %s: %w", userID, err)
	}
	var ensure []Entry // one entry per content not known to be stored
	seen := map[string]bool{}
	for _, e := range m.Entries {
		if e.Type != typeDir {
			m.Files++
			m.Bytes += e.Size
			if !opts.Known[e.SHA256] && !seen[e.SHA256] {
				seen[e.SHA256] = true
				ensure = append(ensure, e)
			}
		}
	}
	if !opts.Locked && (m.Files != marker.Files || m.Bytes != marker.Bytes) {
		return res, fmt.Errorf("back up %s: %w: %d files, %d bytes listed; the marker says %d, %d (a sync is in progress or failed)",
			userID, ErrChanged, m.Files, m.Bytes, marker.Files, marker.Bytes)
	}
	var copied, copiedBytes atomic.Int64
	err = b.parallel(ctx, len(ensure), func(ctx context.Context, j int) error {
		e := ensure[j]
		if err := l.Check(); err != nil {
			return err
		}
		requests.Add(1)
		info, err := b.Store.Head(ctx, ObjectKey(e.SHA256))
		switch {
		case err == nil && info.Size == e.Size:
			return nil
		case err != nil && !errors.Is(err, objsync.ErrNotFound):
			return err
		}
		// Absent (or a wrong size: a corrupt copy, replaced by this one).
		requests.Add(1)
		err = b.Store.Copy(ctx, objsync.CopyInput{Src: prefix + objsync.FilesDir + e.Path, Dst: ObjectKey(e.SHA256), Size: e.Size, SrcIfMatch: e.ETag})
		if errors.Is(err, objsync.ErrPrecondition) || errors.Is(err, objsync.ErrNotFound) {
			return fmt.Errorf("%w: %s changed", ErrChanged, e.Path)
		}
		if err == nil {
			copied.Add(1)
			copiedBytes.Add(e.Size)
		}
		return err
	})
	res.Requests += int(requests.Load())
	res.Copied, res.CopiedBytes = int(copied.Load()), copiedBytes.Load()
	if err != nil {
		return res, fmt.Errorf("back up %s: %w", userID, err)
	}
	for _, e := range ensure {
		opts.Known[e.SHA256] = true
	}
	if !opts.Locked {
		res.Requests++
		again, _, err := readMarker(ctx, b.Store, prefix)
		if err != nil && !errors.Is(err, ErrNoMarker) {
			return res, fmt.Errorf("back up %s: %w", userID, err)
		}
		if err != nil || again.ETag != markerInfo.ETag {
			return res, fmt.Errorf("back up %s: %w: the marker changed (a sync finished meanwhile)", userID, ErrChanged)
		}
	}
	if err := l.Check(); err != nil {
		return res, fmt.Errorf("back up %s: %w", userID, err)
	}
	m.Created = b.now().UTC()
	m.ID = m.Created.Format(IDFormat)
	if len(refs) > 0 && m.ID <= refs[len(refs)-1].ID {
		return res, fmt.Errorf("back up %s: the newest backup %s is not older than now (%s): is the clock behind?", userID, refs[len(refs)-1].ID, m.ID)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return res, fmt.Errorf("back up %s: encode manifest: %w", userID, err)
	}
	res.Requests++
	if _, err := b.Store.Put(ctx, objsync.PutInput{Key: manifestKey(userID, m.ID, m.MarkerETag), Body: bytes.NewReader(data),
		Size: int64(len(data)), IfNoneMatch: true}); err != nil {
		return res, fmt.Errorf("back up %s: write manifest: %w", userID, err)
	}
	res.ID, res.Files, res.Bytes = m.ID, m.Files, m.Bytes
	log.Info("backed up", "backup", m.ID, "files", m.Files, "bytes", m.Bytes, "copied", res.Copied,
		"copiedBytes", res.CopiedBytes, "requests", res.Requests, "generation", marker.Generation)
	return res, nil
}

// describe looks at one object (HEAD) and returns its entry.
func describe(ctx context.Context, s Store, o objsync.ObjectInfo, rel string, isDir bool) (Entry, error) {
	info, err := s.Head(ctx, o.Key)
	if err != nil {
		return Entry{}, err
	}
	if info.ETag != o.ETag {
		return Entry{}, fmt.Errorf("%w: %s changed since listed", objsync.ErrNotFound, o.Key)
	}
	e := Entry{Path: rel, Type: info.Meta[metaType], SHA256: objsync.ObjectSHA256(info.Meta), Size: info.Size,
		Mode: info.Meta["mode"], MTime: info.Meta["mtime"], Meta: info.Meta, ETag: o.ETag, LastModified: o.LastModified}
	switch {
	case isDir:
		if e.Type == "" {
			e.Type = typeDir
			e.Meta = withType(info.Meta, typeDir)
		}
		e.SHA256 = ""
	case e.Type == "":
		e.Type = typeFile // written by another tool
		e.Meta = withType(info.Meta, typeFile)
	}
	if (e.Type == typeDir) != isDir || (!isDir && !validSum(e.SHA256)) {
		return Entry{}, fmt.Errorf("%w: %s (type %q, not written by a sync): its content has no key", ErrUnhashed, o.Key, e.Type)
	}
	return e, nil
}

func withType(meta map[string]string, t string) map[string]string {
	m := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		m[k] = v
	}
	m[metaType] = t
	return m
}

// readMarker reads the prefix's marker: its object's description and content.
func readMarker(ctx context.Context, s objsync.Bucket, prefix string) (objsync.ObjectInfo, objsync.Marker, error) {
	info, body, err := s.Get(ctx, objsync.MarkerKey(prefix))
	if errors.Is(err, objsync.ErrNotFound) {
		return info, objsync.Marker{}, ErrNoMarker
	}
	if err != nil {
		return info, objsync.Marker{}, fmt.Errorf("read marker: %w", err)
	}
	defer body.Close()
	var m objsync.Marker
	data, err := io.ReadAll(io.LimitReader(body, 1<<16))
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		return info, m, fmt.Errorf("read marker %s: %w", objsync.MarkerKey(prefix), err)
	}
	return info, m, nil
}
