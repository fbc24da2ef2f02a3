package objsync

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
)

// digest is the manifest digest a marker carries: the SHA-256, in hex, of one line
// "<sha256 hex>  <path>\n" per file and symbolic link the prefix holds, in byte order
// of their paths (relative to the workspace, '/'-separated), empty directories left
// out. A file's hash is of its content, a link's of its target. For a workspace of
// regular files whose names hold no newline or backslash, and with nothing excluded,
// that is what
//
//	find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
//
// prints, so a user can check a receipt against a restored copy. A path that a restore
// could not bring down (held) has no known hash and counts with an empty one.
func digest(files map[string]entry) string {
	paths := make([]string, 0, len(files))
	for rel, e := range files {
		if e.Kind != kindDir {
			paths = append(paths, rel)
		}
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, rel := range paths {
		h.Write([]byte(files[rel].SHA256))
		h.Write([]byte("  "))
		h.Write([]byte(rel))
		h.Write([]byte("\n"))
	}
	return hex.EncodeToString(h.Sum(nil))
}
