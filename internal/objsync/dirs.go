package objsync

import (
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sandgate/sandgate/internal/logging"
)

// maxOpenDirs bounds the directory handles a restore keeps open.
const maxOpenDirs = 64

// dirs hands out an os.Root per directory below Dir, creating the directory on first
// use. Each restored file then costs single-name system calls (openat, renameat, ...)
// from its directory instead of a walk down from Dir for every call, while every
// handle stays confined to Dir like the root it came from.
type dirs struct {
	root *os.Root
	mu   sync.Mutex
	open map[string]*dirHandle
}

type dirHandle struct {
	r    *os.Root
	refs int
}

func newDirs(root *os.Root) *dirs {
	return &dirs{root: root, open: map[string]*dirHandle{}}
}

// get returns the handle of dir (relative to Dir, "." for Dir itself) and a function
// that gives it back.
func (d *dirs) get(dir string) (*os.Root, func(), error) {
	if dir == "." {
		return d.root, func() {}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.open[dir]
	if !ok {
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, err
		}
		r, err := d.root.OpenRoot(dir)
		if err != nil {
			return nil, nil, err
		}
		d.evict()
		h = &dirHandle{r: r}
		d.open[dir] = h
	}
	h.refs++
	return h.r, func() {
		d.mu.Lock()
		h.refs--
		d.mu.Unlock()
	}, nil
}

// evict closes idle handles once too many are open; callers hold d.mu.
func (d *dirs) evict() {
	if len(d.open) < maxOpenDirs {
		return
	}
	for dir, h := range d.open {
		if h.refs == 0 {
			h.r.Close()
			delete(d.open, dir)
		}
	}
}

func (d *dirs) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for dir, h := range d.open {
		h.r.Close()
		delete(d.open, dir)
	}
}

// localInfo is what Restore knows of Dir before it writes: every entry found without
// following symlinks, and the directories it looked into.
type localInfo struct {
	root    *os.Root
	entries map[string]fs.FileInfo
}

// scanLocal walks Dir once, so that planning a restore into an empty or partly filled
// directory costs one walk instead of a lookup per object. On the way it deletes the
// temporary files an interrupted restore left behind; the walk does not follow
// symlinks, so it never leaves Dir.
func scanLocal(root *os.Root, dir string, log *slog.Logger) *localInfo {
	li := &localInfo{root: root, entries: map[string]fs.FileInfo{}}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			if !d.IsDir() {
				if err := os.Remove(p); err != nil {
					log.Warn("cannot remove a temporary file", keyPath, p, logging.Error, err.Error())
				}
			}
			return skipDir(d)
		}
		rel, _ := filepath.Rel(dir, p)
		if fi, err := d.Info(); err == nil {
			li.entries[filepath.ToSlash(rel)] = fi
		}
		return nil
	})
	return li
}

// lstat describes rel as it is on disk. A path whose parent the walk did not enter (a
// symlinked or unreadable directory) is looked up through the root, which follows
// links inside Dir exactly as a later write would.
func (li *localInfo) lstat(rel string) (fs.FileInfo, error) {
	if fi, ok := li.entries[rel]; ok {
		return fi, nil
	}
	parent := path.Dir(rel)
	if fi, ok := li.entries[parent]; parent == "." || ok && fi.IsDir() {
		return nil, fs.ErrNotExist
	}
	return li.root.Lstat(rel)
}
