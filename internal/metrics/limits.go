package metrics

// Metric names of the per-user limits (issue 19).
const (
	// ConnectsLimited counts connects refused by a per-user limit: the connect rate or
	// the connection cap (Connect).
	ConnectsLimited = "ConnectsLimited"
	// RateLimitCloses counts connections closed for being rate limited again and again
	// (Message).
	RateLimitCloses = "RateLimitCloses"
)
