package objsync

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/sandgate/sandgate/internal/logging"
)

// local is one path of the tree as the walk saw it.
type local struct {
	Kind   kind
	Size   int64
	MTime  int64
	Mode   uint32
	Target string // symlinks only
}

// matches reports whether the manifest entry e still describes l, by stat alone.
func (e entry) matches(l local) bool {
	return e.Kind == l.Kind && e.Size == l.Size && e.MTime == l.MTime && e.Mode == l.Mode
}

// tree is the result of one walk.
type tree struct {
	paths map[string]local
	// failures are directories or entries that could not be read; with any, a sync
	// deletes nothing, since what it cannot see may still exist.
	failures []Failure
	skipped  int
	// kept are paths present but not stored this time (too large): their objects
	// must not be deleted.
	kept map[string]bool
}

// walk lists Dir without following symbolic links. Excluded paths, restore's
// temporary files and paths that cannot be stored are left out; directories with
// nothing stored below them are listed as kindDir.
func (s *Syncer) walk(ex *excluder, log *slog.Logger) (*tree, error) {
	fi, err := os.Stat(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("read dir: %s is not a directory", s.dir)
	}
	t := &tree{paths: map[string]local{}, kept: map[string]bool{}}
	dirs := map[string]local{}
	full := map[string]bool{} // directories with something stored below them
	err = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if p == s.dir {
			return err // the root itself unreadable: the caller refuses
		}
		relOS, _ := filepath.Rel(s.dir, p)
		rel := filepath.ToSlash(relOS)
		if err != nil {
			// WalkDir reports an unreadable directory after visiting it: it must not
			// then pass for an empty one.
			delete(dirs, rel)
			full[rel], full[path.Dir(rel)] = true, true
			t.failures = append(t.failures, Failure{Name: rel, Err: err})
			log.Warn("cannot read path; this sync deletes nothing", keyPath, rel, logging.Error, err.Error())
			return nil
		}
		// Anything present, stored or not, keeps its directory from passing for empty.
		full[path.Dir(rel)] = true
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			return skipDir(d)
		}
		if ex.match(rel) {
			return skipDir(d)
		}
		if !storable(s.prefix, rel) {
			t.skipped++
			log.Warn("path cannot be stored as a key; skipped", keyPath, rel)
			return skipDir(d)
		}
		info, err := d.Info()
		if err != nil {
			t.failures = append(t.failures, Failure{Name: rel, Err: err})
			return nil
		}
		l := local{Size: info.Size(), MTime: info.ModTime().UnixNano(), Mode: uint32(info.Mode().Perm())}
		switch mode := info.Mode(); {
		case mode.IsDir():
			l.Size = 0
			l.Kind = kindDir
			dirs[rel] = l
		case mode.IsRegular() && l.Size > MaxObjectSize:
			t.skipped++
			t.kept[rel] = true
			log.Warn("file larger than one upload allows; not synced, the bucket keeps its copy", keyPath, rel, keyBytes, l.Size)
		case mode.IsRegular():
			l.Kind = kindFile
			t.paths[rel] = l
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				t.failures = append(t.failures, Failure{Name: rel, Err: err})
				return nil
			}
			if !linkInside(rel, filepath.ToSlash(target)) {
				t.skipped++
				log.Info("symlink leads out of the directory; not followed, not stored", keyPath, rel)
				return nil
			}
			l.Kind, l.Target, l.Size, l.Mode = kindLink, filepath.ToSlash(target), int64(len(target)), 0o777
			t.paths[rel] = l
		default:
			t.skipped++
			log.Info("special file skipped", keyPath, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dir: %w", err)
	}
	for rel, l := range dirs {
		if !full[rel] {
			t.paths[rel] = l
		}
	}
	return t, nil
}

func skipDir(d fs.DirEntry) error {
	if d.IsDir() {
		return filepath.SkipDir
	}
	return nil
}

// hasFiles reports whether the tree holds a regular file or a symlink.
func (t *tree) hasFiles() bool {
	for _, l := range t.paths {
		if l.Kind != kindDir {
			return true
		}
	}
	return false
}
