package objsync

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"
	"time"
)

// Objects written from outside a sandbox — an operator's import of another layout
// (infra/admin's import-bucket) — as a sync writes them, so a restore cannot tell them
// from its own.

// FileObject returns the key and metadata under which a regular file at rel (slash-
// separated, relative to the workspace) of mode, modified at mtime and whose content's
// SHA-256 is sha256hex, is stored under prefix, as written by generation gen (0: by no
// sandbox). A rel a sync could not store is ErrBadKey.
func FileObject(prefix, rel string, mode fs.FileMode, mtime time.Time, sha256hex string, gen int64) (string, map[string]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", nil, err
	}
	if !storable(prefix, rel) {
		return "", nil, fmt.Errorf("%w: %q cannot be stored", ErrBadKey, rel)
	}
	e := entry{Kind: kindFile, Mode: uint32(mode.Perm()), MTime: mtime.UnixNano(), SHA256: sha256hex}
	return objectKey(prefix, rel, kindFile), encodeMeta(e, gen), nil
}

// ObjectSHA256 returns the SHA-256 an object's metadata records, "" when it has none.
func ObjectSHA256(meta map[string]string) string { return meta[metaSHA256] }

// MarkerObject returns the marker's key, body and metadata for prefix, as a sync
// writes them.
func MarkerObject(prefix string, m Marker) (string, []byte, map[string]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", nil, nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", nil, nil, fmt.Errorf("encode marker: %w", err)
	}
	return MarkerKey(prefix), b, map[string]string{metaType: "marker", metaGeneration: strconv.FormatInt(m.Generation, 10)}, nil
}
