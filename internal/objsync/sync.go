package objsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// Sync uploads what changed in Dir since the last Restore or Sync, deletes the objects
// of paths removed from Dir (in batches of at most MaxDeleteBatch), and only then
// writes .last-sync, so a marker never claims a sync that did not finish.
//
// Size and mtime decide what changed: an unchanged tree costs a directory walk and no
// request. Sync refuses (ErrRefused, nothing deleted) when Dir is missing or
// unreadable, when Dir holds no file while the bucket does, and when the prefix holds
// data but this StateDir was never restored from it. A fence refusal or a newer
// generation's marker stops it with ErrFenced. Any failed path makes it return a
// *PartialError, with what did succeed recorded so the next Sync resumes there.
func (s *Syncer) Sync(ctx context.Context) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	cfg, err := s.settings("sync")
	if err != nil {
		return Stats{}, err
	}
	stats, err := s.sync(ctx, cfg)
	stats.Duration = time.Since(start)
	logDone(cfg.log, "sync", stats, err)
	return stats, err
}

// upload is one path Sync writes, and what the manifest says its key holds.
type upload struct {
	rel  string
	l    local
	cond condition
}

func (s *Syncer) sync(ctx context.Context, cfg settings) (Stats, error) {
	var stats Stats
	log := cfg.log
	st := s.loadState(log)
	if st == nil {
		page, err := s.bucket.List(ctx, s.prefix, "")
		if err != nil {
			return stats, fmt.Errorf("sync %s: list prefix: %w", s.prefix, err)
		}
		if len(page.Objects) > 0 || page.Next != "" {
			log.Warn("refusing to sync: the prefix holds data but this directory was never restored from it",
				logging.Reason, "not_restored")
			return stats, fmt.Errorf("%w: %s holds data but %s was never restored from it; restore first",
				ErrRefused, s.prefix, s.dir)
		}
		st = s.newState()
	}
	// Changes made from here on carry later mtimes than the marker will claim, so a
	// restore onto this disk never takes them for older than the bucket.
	snapshot := time.Now().Add(-MarkerSlack)
	t, err := s.walk(cfg.ex, log)
	if err != nil {
		log.Warn("refusing to sync: directory unreadable; the bucket keeps its copy",
			logging.Reason, "dir_unreadable", logging.Error, err.Error())
		return stats, fmt.Errorf("sync %s: %w: %w", s.prefix, ErrRefused, err)
	}
	stats.Skipped = t.skipped
	if remote := stateFiles(st); !t.hasFiles() && remote > 0 {
		log.Warn("refusing to sync: directory is empty but the bucket holds files; keeping both",
			logging.Reason, "dir_empty", keyFiles, remote)
		return stats, fmt.Errorf("%w: %s is empty but %s holds %d files; keeping both",
			ErrRefused, s.dir, s.prefix, remote)
	}

	ups, dels, unchanged := s.plan(st, t)
	stats.Unchanged = unchanged
	if len(t.failures) > 0 && len(dels) > 0 {
		log.Warn("part of the directory could not be read; deleting nothing this time", keyDeleted, len(dels))
		dels = nil
	}
	owed := st.Marker == nil || st.Pending || st.Marker.Generation != s.Generation
	if len(ups) == 0 && len(dels) == 0 && !owed && len(t.failures) == 0 {
		return stats, nil
	}

	if err := s.fence(ctx); err != nil {
		return stats, err
	}
	if err := s.checkRemoteGeneration(ctx, log); err != nil {
		return stats, err
	}
	if len(ups) > 0 || len(dels) > 0 {
		st.Pending = true
	}

	failures := append([]Failure(nil), t.failures...)
	upFailures, stopErr := s.uploadAll(ctx, cfg, st, ups, &stats)
	failures = append(failures, upFailures...)
	if stopErr == nil {
		var delFailures []Failure
		delFailures, stopErr = s.deleteAll(ctx, st, dels, &stats, log)
		failures = append(failures, delFailures...)
	}
	if err := s.saveState(st); err != nil {
		return stats, fmt.Errorf("sync %s: %w", s.prefix, err)
	}
	stats.Failed = len(failures)
	switch {
	case stopErr != nil:
		return stats, stopErr
	case len(failures) > 0:
		return stats, &PartialError{Op: "sync", Failures: failures}
	}

	// Everything is written: now, and only now, the marker.
	if err := s.fence(ctx); err != nil {
		return stats, err
	}
	if err := s.checkRemoteGeneration(ctx, log); err != nil {
		return stats, err
	}
	m := Marker{Generation: s.Generation, Time: snapshot.UTC()}
	for _, e := range st.Files {
		if e.Kind != kindDir {
			m.Files++
			m.Bytes += e.Size
		}
	}
	m.Digest = digest(st.Files)
	etag, err := s.writeMarker(ctx, m, st.MarkerETag, log)
	if err != nil {
		return stats, fmt.Errorf("sync %s: %w", s.prefix, err)
	}
	st.Marker, st.MarkerETag, st.Pending = &m, etag, false
	if err := s.saveState(st); err != nil {
		return stats, fmt.Errorf("sync %s: %w", s.prefix, err)
	}
	stats.Marker = &m
	return stats, nil
}

// plan compares the walked tree with the manifest: what to upload, which keys to
// delete, and how many paths are unchanged.
func (s *Syncer) plan(st *state, t *tree) (ups []upload, dels []string, unchanged int) {
	for rel, l := range t.paths {
		e, ok := st.Files[rel]
		switch {
		case ok && e.matches(l) && e.Held:
			continue // restore could not bring this path down, and the user has not touched it
		case ok && e.matches(l):
			unchanged++
			continue
		}
		// Written over the object the manifest knows under this key, or as a new key.
		sameKey := ok && objectKey(s.prefix, rel, e.Kind) == objectKey(s.prefix, rel, l.Kind)
		u := upload{rel: rel, l: l, cond: condition{ifNoneMatch: true}}
		if sameKey && e.ETag != "" {
			u.cond = condition{ifMatch: e.ETag}
		}
		ups = append(ups, u)
		if ok && !e.Held && !sameKey {
			dels = append(dels, objectKey(s.prefix, rel, e.Kind)) // a file became an empty directory, or back
		}
	}
	for rel, e := range st.Files {
		if _, ok := t.paths[rel]; !ok && !e.Held && !t.kept[rel] {
			dels = append(dels, objectKey(s.prefix, rel, e.Kind))
		}
	}
	return ups, dels, unchanged
}

// stateFiles counts the files and symlinks the manifest says the bucket holds.
func stateFiles(st *state) int {
	n := 0
	for _, e := range st.Files {
		if e.Kind != kindDir {
			n++
		}
	}
	return n
}

// checkRemoteGeneration reads the bucket's marker and refuses to go on when a newer
// generation wrote it: a newer sandbox owns the prefix.
func (s *Syncer) checkRemoteGeneration(ctx context.Context, log *slog.Logger) error {
	if s.Generation == 0 {
		return nil
	}
	m, _, err := s.readMarker(ctx, log)
	if err != nil {
		return fmt.Errorf("sync %s: %w", s.prefix, err)
	}
	if err := s.checkGeneration(m); err != nil {
		log.Warn("a newer generation owns the prefix; writing nothing", keyGeneration, m.Generation)
		return err
	}
	return nil
}

// uploadAll uploads ups in parallel and records each success in st. It returns the
// failed paths, and a non-nil error when the whole sync must stop (fence refused,
// context done).
func (s *Syncer) uploadAll(ctx context.Context, cfg settings, st *state, ups []upload, stats *Stats) ([]Failure, error) {
	if len(ups) == 0 {
		return nil, nil
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, fmt.Errorf("sync %s: %w: %w", s.prefix, ErrRefused, err)
	}
	defer root.Close()

	var total int64
	for _, u := range ups {
		total += u.l.Size
	}
	tr := newTracker("sync", s.Progress, len(ups), total)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		stopErr error
		skipped int
	)
	done := make([]entry, len(ups))
	ok := make([]bool, len(ups))
	parallel(wctx, cfg.concurrency, len(ups), func(i int) {
		if wctx.Err() != nil {
			return
		}
		u := ups[i]
		e, err := s.upload(wctx, root, u, cfg.log)
		switch {
		case err == nil:
			done[i], ok[i] = e, true
			tr.done(e.Size)
		case errors.Is(err, ErrFenced):
			mu.Lock()
			if stopErr == nil {
				stopErr = err
			}
			mu.Unlock()
			cancel()
		case wctx.Err() != nil:
			// Cancelled: the caller's context or a fence refusal elsewhere says why.
		case errors.Is(err, errChanged) || errors.Is(err, fs.ErrNotExist):
			mu.Lock()
			skipped++
			mu.Unlock()
			cfg.log.Info("file changed while uploading; left for the next sync", keyPath, u.rel)
		default:
			tr.fail(u.rel, err)
			cfg.log.Warn("upload failed", keyPath, u.rel, logging.Error, err.Error())
		}
	})
	for i, u := range ups {
		if ok[i] {
			st.Files[u.rel] = done[i]
			stats.Files++
			stats.Bytes += done[i].Size
		}
	}
	stats.Skipped += skipped
	if stopErr == nil && ctx.Err() != nil {
		stopErr = fmt.Errorf("sync %s: %w", s.prefix, ctx.Err())
	}
	return tr.failures, stopErr
}

// upload writes one path, trying again when the file changes while it is read.
func (s *Syncer) upload(ctx context.Context, root *os.Root, u upload, log *slog.Logger) (entry, error) {
	var err error
	for range DefaultChangedRetries + 1 {
		var e entry
		e, err = s.uploadOnce(ctx, root, u.rel, u.l, u.cond, log)
		if !errors.Is(err, errChanged) {
			return e, err
		}
	}
	return entry{}, err
}

func (s *Syncer) uploadOnce(ctx context.Context, root *os.Root, rel string, l local, cond condition, log *slog.Logger) (entry, error) {
	e := entry{Kind: l.Kind, Size: l.Size, MTime: l.MTime, Mode: l.Mode}
	var (
		body io.ReadSeeker
		sum  []byte
	)
	switch l.Kind {
	case kindLink:
		h := sha256.Sum256([]byte(l.Target))
		sum, body = h[:], strings.NewReader(l.Target)
	case kindDir:
		h := sha256.Sum256(nil)
		sum, body = h[:], strings.NewReader("")
	default:
		// O_NOFOLLOW: a file replaced by a symlink since the walk is not followed.
		f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, syscall.ELOOP) {
			return entry{}, errChanged
		}
		if err != nil {
			return entry{}, fmt.Errorf("open file: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return entry{}, fmt.Errorf("stat file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return entry{}, errChanged
		}
		e.Size, e.MTime, e.Mode = fi.Size(), fi.ModTime().UnixNano(), uint32(fi.Mode().Perm())
		h, c := sha256.New(), crc32.New(castagnoli)
		if n, err := io.Copy(io.MultiWriter(h, c), io.NewSectionReader(f, 0, e.Size)); err != nil {
			return entry{}, fmt.Errorf("hash file: %w", err)
		} else if n != e.Size {
			return entry{}, errChanged
		}
		sum = h.Sum(nil)
		body = newCheckedReader(f, e.Size, c.Sum32())
	}
	e.SHA256 = hex.EncodeToString(sum)
	if err := s.fence(ctx); err != nil {
		return entry{}, err
	}
	key := objectKey(s.prefix, rel, e.Kind)
	etag, err := s.putConditional(ctx, PutInput{
		Key:    key,
		Body:   body,
		Size:   e.Size,
		Meta:   encodeMeta(e, s.Generation),
		SHA256: sum,
	}, cond, s.resolveObject(key, log))
	if err != nil {
		return entry{}, err
	}
	e.ETag = etag
	return e, nil
}

// deleteAll deletes keys in batches, fencing each and reading the marker's generation
// again right before it (deletes carry no store condition; see fence.go), and drops
// the deleted paths from st.
func (s *Syncer) deleteAll(ctx context.Context, st *state, keys []string, stats *Stats, log *slog.Logger) ([]Failure, error) {
	var failures []Failure
	for len(keys) > 0 {
		batch := keys[:min(len(keys), MaxDeleteBatch)]
		keys = keys[len(batch):]
		if err := s.fence(ctx); err != nil {
			return failures, err
		}
		if err := ctx.Err(); err != nil {
			return failures, fmt.Errorf("sync %s: %w", s.prefix, err)
		}
		if err := s.checkRemoteGeneration(ctx, log); err != nil {
			return failures, err
		}
		failed := map[string]bool{}
		err := s.bucket.Delete(ctx, batch)
		var pe *PartialError
		switch {
		case errors.As(err, &pe):
			for _, f := range pe.Failures {
				failed[f.Name] = true
				failures = append(failures, f)
			}
		case err != nil:
			for _, k := range batch {
				failed[k] = true
			}
			failures = append(failures, Failure{Name: fmt.Sprintf("%d keys from %s", len(batch), batch[0]), Err: err})
		}
		for _, k := range batch {
			if failed[k] {
				continue
			}
			stats.Deleted++
			rel, dir, err := pathOfKey(s.prefix, k)
			if err == nil && (st.Files[rel].Kind == kindDir) == dir {
				delete(st.Files, rel)
			}
		}
	}
	return failures, nil
}

// logDone writes the one line that sums up a restore or a sync.
func logDone(log *slog.Logger, op string, st Stats, err error) {
	attrs := []any{keyFiles, st.Files, keyBytes, st.Bytes, keyDeleted, st.Deleted, keyUnchanged, st.Unchanged,
		keyKept, st.Kept, keySkipped, st.Skipped, keyFailed, st.Failed, logging.Duration, st.Duration.Milliseconds()}
	if err != nil {
		log.Warn(op+" did not finish", append(attrs, logging.Error, err.Error())...)
		return
	}
	// A periodic sync that moved nothing is routine; say so only when debugging.
	level := slog.LevelInfo
	if st.Files == 0 && st.Deleted == 0 && st.Failed == 0 && st.Skipped == 0 && st.Kept == 0 {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, op+" finished", attrs...)
}
