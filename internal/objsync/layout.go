package objsync

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/sandgate/sandgate/internal/userid"
)

const (
	// MarkerName is the marker's key relative to the prefix.
	MarkerName = ".last-sync"
	// FilesDir is where user files live, relative to the prefix.
	FilesDir = "files/"
	// MinPrefixDepth is the fewest segments a prefix may have, so a mistaken empty user
	// id ("users/") can never address every user's data at once.
	MinPrefixDepth = 2
	// MaxKeyBytes is the longest key S3 and R2 accept.
	MaxKeyBytes = 1024
	// MaxObjectSize is the largest object one PUT may write on S3 and R2 (5 GiB).
	// Larger files are skipped with a warning rather than failing every sync; the
	// bucket keeps whatever version it had.
	MaxObjectSize = 5 << 30
	// tmpPrefix starts the names of restore's temporary files. Sync ignores such names
	// and Restore removes them, so an interrupted restore leaves nothing behind.
	tmpPrefix = ".sandgate-tmp-"
)

// UserPrefix returns the prefix that holds one user's data: users/<userId>/.
func UserPrefix(userID string) (string, error) {
	if !userid.Valid(userID) {
		return "", fmt.Errorf("%w: user id %q is not a valid user id", ErrConfig, userID)
	}
	return "users/" + userID + "/", nil
}

// ValidatePrefix checks that prefix can hold one user's data: at least MinPrefixDepth
// non-empty segments, ending in "/", no "." or ".." segment, valid UTF-8.
func ValidatePrefix(prefix string) error {
	switch {
	case prefix == "":
		return fmt.Errorf("%w: empty prefix", ErrConfig)
	case !strings.HasSuffix(prefix, "/"):
		return fmt.Errorf("%w: prefix %q must end with /", ErrConfig, prefix)
	case !utf8.ValidString(prefix) || strings.ContainsRune(prefix, 0):
		return fmt.Errorf("%w: prefix %q is not valid UTF-8", ErrConfig, prefix)
	case len(prefix) > MaxKeyBytes/2:
		return fmt.Errorf("%w: prefix is longer than %d bytes", ErrConfig, MaxKeyBytes/2)
	}
	segs := strings.Split(strings.TrimSuffix(prefix, "/"), "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("%w: prefix %q has an empty, . or .. segment", ErrConfig, prefix)
		}
	}
	if len(segs) < MinPrefixDepth {
		return fmt.Errorf("%w: prefix %q has fewer than %d segments", ErrConfig, prefix, MinPrefixDepth)
	}
	return nil
}

// MarkerKey returns the key of the prefix's .last-sync marker.
func MarkerKey(prefix string) string { return prefix + MarkerName }

// objectKey returns the key that stores path rel of kind k.
func objectKey(prefix, rel string, k kind) string {
	if k == kindDir {
		return prefix + FilesDir + rel + "/"
	}
	return prefix + FilesDir + rel
}

// pathOfKey maps a key under prefix+FilesDir back to a path relative to Dir, refusing
// every key that could not have come from a sync: the path must be local, clean and
// free of the names restore reserves for itself.
func pathOfKey(prefix, key string) (rel string, dir bool, err error) {
	rest, ok := strings.CutPrefix(key, prefix+FilesDir)
	if !ok {
		return "", false, fmt.Errorf("%w: %q is not under %s", ErrBadKey, key, prefix+FilesDir)
	}
	rest, dir = strings.CutSuffix(rest, "/")
	if err := checkRel(rest); err != nil {
		return "", false, err
	}
	return rest, dir, nil
}

// checkRel accepts a slash-separated relative path with no empty, "." or ".."
// segment, no leading slash, valid UTF-8 and none of restore's temporary names.
func checkRel(rel string) error {
	if rel == "" || strings.HasPrefix(rel, "/") || !utf8.ValidString(rel) || strings.ContainsRune(rel, 0) {
		return fmt.Errorf("%w: %q", ErrBadKey, rel)
	}
	for _, s := range strings.Split(rel, "/") {
		if s == "" || s == "." || s == ".." || strings.HasPrefix(s, tmpPrefix) {
			return fmt.Errorf("%w: %q", ErrBadKey, rel)
		}
	}
	return nil
}

// storable reports whether a local path can be stored as a key: valid UTF-8, short
// enough, and free of control characters, which S3 listings cannot carry in XML 1.0.
func storable(prefix, rel string) bool {
	if !utf8.ValidString(rel) || len(prefix)+len(FilesDir)+len(rel)+1 > MaxKeyBytes {
		return false
	}
	for _, r := range rel {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return checkRel(rel) == nil
}

// linkInside reports whether a symlink at rel with the given target stays inside the
// directory: relative, and never climbing above the root. Absolute targets count as
// outside, since the same tree is restored under other directories.
func linkInside(rel, target string) bool {
	if target == "" || path.IsAbs(target) || strings.ContainsRune(target, 0) {
		return false
	}
	depth := strings.Count(rel, "/") // directories above the link
	for _, s := range strings.Split(target, "/") {
		switch s {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return false
			}
		default:
			depth++
		}
	}
	return true
}
