package auth

import (
	"errors"
	"time"
)

// ErrRevoked: the URL is well signed and within its lifetime, but its user was revoked
// after it may have been signed (an operator's revoke, or the user's deletion).
var ErrRevoked = errors.New("signature revoked")

// MayPredate reports whether a URL with this exp may have been signed before t, so
// that a revocation at t must refuse it. A URL carries no time of signing, only its
// expiry, which a signer sets at most maxLifetime ahead of its own clock, and that
// clock may run skew ahead of ours: any exp up to t + maxLifetime + skew may come
// from before t. A URL signed after t with the full lifetime has a later exp once the
// skew has passed; a shorter lifetime (the signers' DefaultTTL, 10 min, against a
// 15 min maximum) must wait out the difference too.
func MayPredate(exp int64, t time.Time, maxLifetime, skew time.Duration) bool {
	if t.IsZero() {
		return false
	}
	return !time.Unix(exp, 0).After(t.Add(maxLifetime + skew))
}

// AcceptedFrom is the first time at which a URL signed now with ttl passes a
// revocation at t: its exp must lie beyond t + maxLifetime + skew.
func AcceptedFrom(t time.Time, ttl, maxLifetime, skew time.Duration) time.Time {
	return t.Add(maxLifetime + skew - ttl).Truncate(time.Second).Add(time.Second)
}
