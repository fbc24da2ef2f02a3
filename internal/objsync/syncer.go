package objsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// Defaults for Syncer's tunables.
const (
	// DefaultConcurrency is how many objects move at once: enough to hide per-request
	// latency on small files without starving a 2-vCPU task.
	DefaultConcurrency = 16
	// DefaultChangedRetries is how often an upload is retried when the file changes
	// while it is read, before the file is left for the next sync.
	DefaultChangedRetries = 2
	// DefaultDownloadAttempts is how often a download is tried when its body breaks off
	// after the store answered (the client's retryer covers only the request itself).
	DefaultDownloadAttempts = 3
)

// maxMarkerBytes bounds how much of a .last-sync object is read.
const maxMarkerBytes = 64 << 10

// Log keys of this package; the shared ones come from internal/logging.
const (
	keyOp         = "op"
	keyPrefix     = "prefix"
	keyDir        = "dir"
	keyPath       = "path"
	keyFiles      = "files"
	keyBytes      = "bytes"
	keyDeleted    = "deleted"
	keyUnchanged  = "unchanged"
	keyKept       = "kept"
	keySkipped    = "skipped"
	keyFailed     = "failed"
	keyGeneration = "generation"
)

// Progress reports how far a Restore or Sync has come. Totals are known once the work
// is planned; the first call has Files and Bytes at zero.
type Progress struct {
	// Op is "restore" or "sync".
	Op         string
	Files      int
	TotalFiles int
	Bytes      int64
	TotalBytes int64
}

// Stats summarises one Restore or Sync.
type Stats struct {
	// Files and Bytes count what was downloaded (restore) or uploaded (sync).
	Files int
	Bytes int64
	// Deleted counts keys removed from the bucket (sync).
	Deleted int
	// Unchanged counts paths that were already current.
	Unchanged int
	// Kept counts local files that Restore left alone because they are newer than the
	// bucket's marker (and differ from the stored copy).
	Kept int
	// Skipped counts paths that cannot be stored (symlinks leading out of Dir, special
	// files, names S3 cannot carry) or that changed while being uploaded.
	Skipped int
	// Failed counts paths in the returned *PartialError.
	Failed int
	// Duration is how long the call took.
	Duration time.Duration
	// Marker is the marker a Sync wrote, nil when it wrote none: a sync that found
	// nothing to do (no change, and the marker already this generation's) writes no
	// marker, and one that failed never does. The agent's durability receipt.
	Marker *Marker
}

// Syncer restores and syncs one prefix of a Bucket to and from one directory. Restore
// and Sync may be called from several goroutines; they run one at a time.
type Syncer struct {
	// Excludes are patterns of paths Sync does not upload (see DefaultExcludes for the
	// syntax and the patterns used when Excludes is nil; an empty non-nil slice
	// excludes nothing). An excluded path that was synced before is deleted from the
	// bucket by the next Sync.
	Excludes []string
	// Concurrency is how many objects move at once (DefaultConcurrency when zero).
	Concurrency int
	// Fence, when set, is called before every write to the bucket (each upload, each
	// delete batch, the marker), possibly from several goroutines at once. An error
	// stops the sync with ErrFenced and nothing further is written. It should be
	// cheap: the agent checks the deadline of the lease it holds rather than asking
	// DynamoDB each time.
	Fence func(ctx context.Context) error
	// Generation is the lease generation written into .last-sync. A marker with a
	// higher generation means a newer sandbox owns the prefix: Restore and Sync then
	// stop with ErrFenced. Zero turns the check off (tools, tests).
	Generation int64
	// Progress, when set, receives progress reports; calls never overlap.
	Progress func(Progress)
	// Log receives one line per restore or sync and per refused or failed path
	// (slog.Default when nil). Attach the user id with Log.With before use.
	Log *slog.Logger

	bucket   Bucket
	prefix   string
	dir      string
	stateDir string
	mu       sync.Mutex
}

// New returns a Syncer for prefix (for example from UserPrefix) and the absolute
// directory dir the user sees. stateDir holds the manifest and must lie outside dir,
// so the user can neither see nor damage it.
func New(b Bucket, prefix, dir, stateDir string) (*Syncer, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil bucket", ErrConfig)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(dir) || !filepath.IsAbs(stateDir) {
		return nil, fmt.Errorf("%w: dir %q and state dir %q must be absolute", ErrConfig, dir, stateDir)
	}
	dir, stateDir = filepath.Clean(dir), filepath.Clean(stateDir)
	if within(stateDir, dir) || within(dir, stateDir) {
		return nil, fmt.Errorf("%w: state dir %q must lie outside dir %q (and not contain it)", ErrConfig, stateDir, dir)
	}
	return &Syncer{bucket: b, prefix: prefix, dir: dir, stateDir: stateDir}, nil
}

// within reports whether p is base or lies below it.
func within(p, base string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// Prefix returns the prefix the Syncer serves.
func (s *Syncer) Prefix() string { return s.prefix }

// Dir returns the directory the Syncer restores into and syncs from.
func (s *Syncer) Dir() string { return s.dir }

// StateDir returns the directory that holds the manifest.
func (s *Syncer) StateDir() string { return s.stateDir }

// settings are the tunables resolved for one call.
type settings struct {
	ex          *excluder
	concurrency int
	log         *slog.Logger
}

func (s *Syncer) settings(op string) (settings, error) {
	globs := s.Excludes
	if globs == nil {
		globs = DefaultExcludes()
	}
	ex, err := newExcluder(globs)
	if err != nil {
		return settings{}, err
	}
	if s.Concurrency < 0 {
		return settings{}, fmt.Errorf("%w: concurrency %d", ErrConfig, s.Concurrency)
	}
	c := s.Concurrency
	if c == 0 {
		c = DefaultConcurrency
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	return settings{ex: ex, concurrency: c, log: log.With(keyOp, op, keyPrefix, s.prefix)}, nil
}

// fence asks the caller's fence, if any, whether writing is still allowed.
func (s *Syncer) fence(ctx context.Context) error {
	if s.Fence == nil {
		return nil
	}
	if err := s.Fence(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return nil
}

// readMarker returns the bucket's marker and its object's ETag, or nil and "" when
// there is none. A marker that does not parse is logged and treated as absent, which
// only makes Restore more careful; its ETag is still returned, since a write over it
// must name it.
func (s *Syncer) readMarker(ctx context.Context, log *slog.Logger) (*Marker, string, error) {
	info, body, err := s.bucket.Get(ctx, MarkerKey(s.prefix))
	if errors.Is(err, ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read marker: %w", err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, maxMarkerBytes))
	if err != nil {
		return nil, "", fmt.Errorf("read marker: %w", err)
	}
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		log.Warn("marker unreadable; treating the prefix as never synced", logging.Error, err.Error())
		return nil, info.ETag, nil
	}
	return &m, info.ETag, nil
}

// checkGeneration refuses a marker written by a newer lease generation.
func (s *Syncer) checkGeneration(m *Marker) error {
	if s.Generation > 0 && m != nil && m.Generation > s.Generation {
		return fmt.Errorf("%w: marker generation %d is newer than ours (%d)", ErrFenced, m.Generation, s.Generation)
	}
	return nil
}

// writeMarker writes .last-sync over the marker whose ETag is etag ("" for none),
// as a conditional write (see fence.go), and returns the new marker's ETag.
func (s *Syncer) writeMarker(ctx context.Context, m Marker, etag string, log *slog.Logger) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode marker: %w", err)
	}
	etag, err = s.putConditional(ctx, PutInput{
		Key:  MarkerKey(s.prefix),
		Body: strings.NewReader(string(b)),
		Size: int64(len(b)),
		Meta: map[string]string{metaType: "marker", metaGeneration: strconv.FormatInt(m.Generation, 10)},
	}, expectETag(etag), s.resolveMarker(log))
	if err != nil {
		return "", fmt.Errorf("write marker: %w", err)
	}
	return etag, nil
}

// tracker serialises progress reports and failure collection across workers.
type tracker struct {
	mu       sync.Mutex
	report   func(Progress)
	p        Progress
	failures []Failure
}

func newTracker(op string, report func(Progress), files int, bytes int64) *tracker {
	t := &tracker{report: report, p: Progress{Op: op, TotalFiles: files, TotalBytes: bytes}}
	if report != nil {
		report(t.p)
	}
	return t
}

func (t *tracker) done(bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.Files++
	t.p.Bytes += bytes
	if t.report != nil {
		t.report(t.p)
	}
}

func (t *tracker) fail(name string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures = append(t.failures, Failure{Name: name, Err: err})
}

// parallel runs fn(i) for i in [0, n) on up to workers goroutines and stops handing
// out work once ctx is done.
func parallel(ctx context.Context, workers, n int, fn func(i int)) {
	if workers > n {
		workers = n
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}
