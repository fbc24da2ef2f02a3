package objsync

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// kind is what a path is: a regular file, a symbolic link or an empty directory.
type kind string

const (
	kindFile kind = "file"
	kindLink kind = "symlink"
	kindDir  kind = "dir"
)

// User metadata keys (x-amz-meta-<key>). Every object gets all five, so a store that
// merges metadata on overwrite (gofakes3 does) cannot leave a stale one behind.
const (
	metaType   = "type"
	metaMode   = "mode"
	metaMTime  = "mtime"
	metaSHA256 = "sha256"
	// metaGeneration is the lease generation of the sandbox that wrote the object: when
	// a conditional write is refused, it tells a newer sandbox's object (fenced) from
	// this writer's own or an older one's (see Syncer.resolve).
	metaGeneration = "generation"
)

// entry is what is known about one path: its kind, size, mode, mtime (unix
// nanoseconds), content hash and the ETag of the object holding it.
type entry struct {
	Kind   kind   `json:"k"`
	Size   int64  `json:"s"`
	MTime  int64  `json:"m"`
	Mode   uint32 `json:"p"`
	SHA256 string `json:"h,omitempty"`
	ETag   string `json:"e,omitempty"`
	// Held marks a path whose object a restore could not bring down: Size, MTime and
	// Mode then describe the local file as restore left it (zero if absent), and sync
	// neither overwrites nor deletes the object until the local file changes.
	Held bool `json:"held,omitempty"`
}

// encodeMeta returns the complete metadata of an object holding e, written by a
// sandbox of lease generation gen.
func encodeMeta(e entry, gen int64) map[string]string {
	return map[string]string{
		metaType:       string(e.Kind),
		metaMode:       fmt.Sprintf("%04o", e.Mode),
		metaMTime:      formatMTime(e.MTime),
		metaSHA256:     e.SHA256,
		metaGeneration: strconv.FormatInt(gen, 10),
	}
}

// writerGeneration returns the generation that wrote an object, from its metadata;
// ok is false for an object without one (another tool, an older version).
func writerGeneration(meta map[string]string) (gen int64, ok bool) {
	g, err := strconv.ParseInt(meta[metaGeneration], 10, 64)
	return g, err == nil && g >= 0
}

// decodeMeta reads an object's metadata into an entry. Objects written by other tools
// lack some keys: they become regular files, mode 0644, modified when stored, and
// their hash is taken on download instead of checked.
func decodeMeta(info ObjectInfo, dirKey bool) (entry, error) {
	e := entry{Kind: kindFile, Size: info.Size, Mode: 0o644, MTime: info.LastModified.UnixNano(), ETag: info.ETag}
	if dirKey {
		e.Kind, e.Mode = kindDir, 0o755
	}
	m := info.Meta
	if t, ok := m[metaType]; ok && t != "" {
		switch k := kind(t); k {
		case kindFile, kindLink, kindDir:
			if (k == kindDir) != dirKey {
				return entry{}, fmt.Errorf("%w: type %q does not match the key", ErrCorrupt, t)
			}
			e.Kind = k
		default:
			return entry{}, fmt.Errorf("%w: unknown type %q", ErrCorrupt, t)
		}
	}
	if s, ok := m[metaMode]; ok && s != "" {
		mode, err := strconv.ParseUint(s, 8, 32)
		if err != nil || mode > uint64(fs.ModePerm) {
			return entry{}, fmt.Errorf("%w: mode %q", ErrCorrupt, s)
		}
		e.Mode = uint32(mode)
	}
	if s, ok := m[metaMTime]; ok && s != "" {
		ns, err := parseMTime(s)
		if err != nil {
			return entry{}, fmt.Errorf("%w: mtime %q", ErrCorrupt, s)
		}
		e.MTime = ns
	}
	if s, ok := m[metaSHA256]; ok && s != "" {
		if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
			return entry{}, fmt.Errorf("%w: sha256 %q", ErrCorrupt, s)
		}
		e.SHA256 = strings.ToLower(s)
	}
	return e, nil
}

// formatMTime writes unix nanoseconds as rclone does: seconds, a dot, nine digits.
func formatMTime(ns int64) string {
	t := time.Unix(0, ns)
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// parseMTime reads "seconds[.fraction]" back into unix nanoseconds.
func parseMTime(s string) (int64, error) {
	secStr, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return 0, err
	}
	var nsec int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		nsec, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil || nsec < 0 {
			return 0, fmt.Errorf("bad fraction %q", frac)
		}
	}
	return time.Unix(sec, nsec).UnixNano(), nil
}
