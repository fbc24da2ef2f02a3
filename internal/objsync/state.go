package objsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// stateFile is the manifest's name inside StateDir.
const stateFile = "objsync-state.json"

// MarkerSlack covers file systems whose timestamps lag the clock (ext4 stamps files
// from a tick-granular clock): a file changed just after a sync began must still look
// newer than its marker. A marker's Time is its sync's start less MarkerSlack.
const MarkerSlack = time.Second

// stateVersion changes when the manifest's meaning does; another version is ignored,
// which makes the next Sync refuse until a Restore rebuilds it. Version 2: every
// entry's ETag is the condition of its next write, and MarkerETag the marker's.
const stateVersion = 2

// Marker is the content of .last-sync: what the last finished sync wrote.
type Marker struct {
	// Generation is the lease generation of the sandbox that wrote it.
	Generation int64 `json:"generation"`
	// Time is when that sync began reading the directory, less MarkerSlack: every
	// change it did not upload has a later mtime, which is what Restore's "newer than
	// the marker" rule compares.
	Time time.Time `json:"time"`
	// Files and Bytes count what the prefix held after that sync.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Digest is the manifest digest of what the prefix held after that sync (see
	// digest): two markers with the same Digest describe the same files. Markers
	// written before it existed have none ("").
	Digest string `json:"digest,omitempty"`
}

// state is the manifest kept in StateDir: what the bucket holds for each path, as of
// the last restore or sync, and the marker that was current then.
type state struct {
	Version int    `json:"version"`
	Prefix  string `json:"prefix"`
	Dir     string `json:"dir"`
	// Marker is the newest marker known to be in the bucket.
	Marker *Marker `json:"marker,omitempty"`
	// MarkerETag is the ETag of the marker object as this writer last read (Restore)
	// or wrote it, "" when there was none: the next marker is written If-Match it (or
	// If-None-Match: *), so a marker written meanwhile by another sandbox is never
	// overwritten unseen.
	MarkerETag string `json:"markerETag,omitempty"`
	// Pending is set once files were written after Marker: a marker is owed.
	Pending bool             `json:"pending,omitempty"`
	Files   map[string]entry `json:"files"`
}

func (s *Syncer) newState() *state {
	return &state{Version: stateVersion, Prefix: s.prefix, Dir: s.dir, Files: map[string]entry{}}
}

// loadState returns the manifest, or nil when there is none for this prefix and Dir.
// An unreadable or foreign manifest is logged and treated as absent: the callers then
// take the careful path (Sync refuses, Restore trusts nothing local).
func (s *Syncer) loadState(log *slog.Logger) *state {
	b, err := os.ReadFile(filepath.Join(s.stateDir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var st state
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	switch {
	case err != nil:
		log.Warn("sync state unreadable; ignoring it", logging.Error, err.Error())
		return nil
	case st.Version != stateVersion || st.Prefix != s.prefix || st.Dir != s.dir:
		log.Warn("sync state belongs to another prefix, directory or version; ignoring it",
			keyPrefix, st.Prefix, keyDir, st.Dir)
		return nil
	}
	if st.Files == nil {
		st.Files = map[string]entry{}
	}
	return &st
}

// saveState writes the manifest atomically: a temporary file, fsync, rename.
func (s *Syncer) saveState(st *state) error {
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode sync state: %w", err)
	}
	f, err := os.CreateTemp(s.stateDir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write sync state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write sync state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(s.stateDir, stateFile)); err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	return nil
}
