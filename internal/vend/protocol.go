package vend

import (
	"log/slog"
	"time"
)

// PathCredentials is where a sandbox asks for its user's credentials.
const PathCredentials = "/credentials"

// TagUserID is the session tag that scopes a sandbox session to its user: SandboxRole's
// policies allow only ${aws:PrincipalTag/userId}'s objects and items.
const TagUserID = "userId"

// Request is what a task sends: the user, lease token and generation RunTask gave it.
type Request struct {
	UserID     string `json:"userId"`
	Generation int64  `json:"generation"`
	LeaseToken string `json:"leaseToken"`
}

// LogValue leaves the lease token out of logs.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("userId", r.UserID), slog.Int64("generation", r.Generation))
}

// Credentials is the vendor's answer: a session of SandboxRole tagged with the user, in
// the shape of STS's, and with R2 storage, temporary credentials for the user's prefix.
type Credentials struct {
	AccessKeyID     string    `json:"AccessKeyId"`
	SecretAccessKey string    `json:"SecretAccessKey"`
	SessionToken    string    `json:"SessionToken"`
	Expiration      time.Time `json:"Expiration"`
	// Storage is set when the bucket is not AWS S3 (Cloudflare R2): credentials for
	// users/<id>/ only, expiring no later than the session.
	Storage *StorageCredentials `json:"Storage,omitempty"`
}

// StorageCredentials are S3-compatible temporary credentials.
type StorageCredentials struct {
	AccessKeyID     string    `json:"AccessKeyId"`
	SecretAccessKey string    `json:"SecretAccessKey"`
	SessionToken    string    `json:"SessionToken"`
	Expiration      time.Time `json:"Expiration"`
}

// LogValue leaves the secrets out of logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("accessKeyId", c.AccessKeyID), slog.Time("expiration", c.Expiration),
		slog.Bool("storage", c.Storage != nil))
}

// Refusal is the body of every answer but 200: Error is one of the Err* codes, never
// the reason a refusal was decided on (that goes to the vendor's log only).
type Refusal struct {
	Error string `json:"error"`
	// Retryable is true when asking again later may succeed.
	Retryable bool `json:"retryable"`
}

// Error codes of a Refusal.
const (
	// CodeRefused (403): not this caller, not for this user, not with this lease.
	CodeRefused = "refused"
	// CodeNotRecorded (409): the lease and generation are the user's current ones but
	// the record names no task yet (the launcher records it right after RunTask);
	// ask again shortly.
	CodeNotRecorded = "not_recorded"
	// CodeBadRequest (400): the request is not a credentials request.
	CodeBadRequest = "bad_request"
	// CodeUnavailable (503): the table, STS or the storage key could not be reached.
	CodeUnavailable = "unavailable"
)
