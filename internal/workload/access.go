package workload

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// AccessError names the directory that keeps a uid from reaching a path.
type AccessError struct {
	Path     string // the path asked about
	Dir      string // the directory the uid may not search
	UID, GID uint32 // who asked
	Mode     fs.FileMode
	Owner    uint32
	Group    uint32
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("uid %d (gid %d) cannot reach %s: %s is %s, owned by %d:%d", e.UID, e.GID, e.Path, e.Dir, e.Mode, e.Owner, e.Group)
}

// CheckAccess reports whether uid, with gid and no supplementary group, may search
// every directory from / down to dir itself, going by the mode bits (as the workload
// must, to reach its workspace by path); the error, an *AccessError, names the first
// that refuses.
func CheckAccess(dir string, uid, gid uint32) error {
	path, err := filepath.Abs(dir)
	if err == nil {
		path, err = filepath.EvalSymlinks(path)
	}
	if err != nil {
		return fmt.Errorf("check access to %s: %w", dir, err)
	}
	var chain []string
	for p := path; ; p = filepath.Dir(p) {
		chain = append(chain, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		fi, err := os.Stat(chain[i])
		if err != nil {
			return fmt.Errorf("check access to %s: %w", dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("check access to %s: no owner for %s", dir, chain[i])
		}
		var bit fs.FileMode
		switch {
		case st.Uid == uid:
			bit = 0o100
		case st.Gid == gid:
			bit = 0o010
		default:
			bit = 0o001
		}
		if !fi.IsDir() || fi.Mode().Perm()&bit == 0 {
			return &AccessError{Path: dir, Dir: chain[i], UID: uid, GID: gid, Mode: fi.Mode(), Owner: st.Uid, Group: st.Gid}
		}
	}
	return nil
}
