package userid

import "strings"

const (
	// Prefix starts every user id (Clerk's style).
	Prefix = "user_"
	// MaxSuffixLen is the most letters and digits after Prefix.
	MaxSuffixLen = 64
	// MaxLen is the longest user id: Prefix and MaxSuffixLen alphanumerics.
	MaxLen = len(Prefix) + MaxSuffixLen
)

// Valid reports whether id has the form user_<1–64 ASCII letters or digits>. Ids are
// compared exactly, never case-folded, so two users can never collide; and an id is
// safe as a path segment, a key part and a log value.
func Valid(id string) bool {
	if len(id) <= len(Prefix) || len(id) > MaxLen || !strings.HasPrefix(id, Prefix) {
		return false
	}
	for i := len(Prefix); i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
