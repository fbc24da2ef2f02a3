package objsync

import (
	"context"
	"errors"
	"io"
	"time"
)

// MaxDeleteBatch is the most keys one Bucket.Delete call may carry (S3's DeleteObjects limit).
const MaxDeleteBatch = 1000

// Errors a Bucket implementation translates its store's errors into, so the engine and
// its callers never inspect SDK types.
var (
	// ErrNotFound means the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrNoBucket means the bucket does not exist: a configuration error, never retried.
	ErrNoBucket = errors.New("bucket not found")
	// ErrDenied means the store refused the credentials or the request's signature.
	ErrDenied = errors.New("access denied")
	// ErrPrecondition means a conditional write was refused because the object is not
	// what the writer believed: S3's and R2's 412 PreconditionFailed (another ETag, or
	// no object for If-Match; an object for If-None-Match), and S3's 409
	// ConditionalRequestConflict (a conflicting write of the key was in progress). Nothing
	// was written.
	ErrPrecondition = errors.New("precondition failed: the object is not what the writer believed")
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	// Key is the object's full key.
	Key string
	// Size is the object's length in bytes.
	Size int64
	// ETag is the store's entity tag without quotes; it changes when the content does.
	ETag string
	// LastModified is when the store last wrote the object.
	LastModified time.Time
	// Meta holds the user metadata with lower-case keys and no x-amz-meta- prefix.
	// Listings leave it nil; Get fills it.
	Meta map[string]string
}

// Page is one page of a listing.
type Page struct {
	// Objects are in key order.
	Objects []ObjectInfo
	// Next continues the listing; empty on the last page.
	Next string
}

// PutInput is one object to write.
type PutInput struct {
	// Key is the object's full key.
	Key string
	// Body is read from its start; a retry seeks back to the start and reads it again.
	Body io.ReadSeeker
	// Size is Body's exact length.
	Size int64
	// Meta is the complete user metadata of the object (replacing any it had).
	Meta map[string]string
	// SHA256, when set, is Body's SHA-256, so the client can sign the payload without
	// reading it an extra time.
	SHA256 []byte
	// IfMatch, when set, writes only if the key's current object has this ETag
	// (unquoted); IfNoneMatch writes only if no object has the key. Either way the
	// store checks and writes atomically, and a refusal is ErrPrecondition with nothing
	// written. S3 (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html,
	// PutObject's If-Match and If-None-Match: "*") and R2
	// (https://developers.cloudflare.com/r2/api/s3/conditional-operations/, PutObject
	// and CompleteMultipartUpload) both document them. At most one of the two is set.
	IfMatch     string
	IfNoneMatch bool
}

// Bucket is the storage the engine needs, implemented for S3 and R2 by internal/s3bucket.
// Implementations retry transient failures themselves (with backoff) and translate
// their errors into ErrNotFound, ErrNoBucket and ErrDenied where those apply. Every
// method is called from several goroutines at once.
type Bucket interface {
	// List returns one page of the objects whose keys start with prefix, continuing
	// after token ("" for the first page).
	List(ctx context.Context, prefix, token string) (Page, error)
	// Get returns the object's description (with Meta) and its content, which the
	// caller closes. A missing object is ErrNotFound.
	Get(ctx context.Context, key string) (ObjectInfo, io.ReadCloser, error)
	// Put writes the object and returns its new ETag; under a condition (IfMatch,
	// IfNoneMatch) that does not hold it writes nothing and returns ErrPrecondition.
	Put(ctx context.Context, in PutInput) (etag string, err error)
	// Delete removes at most MaxDeleteBatch keys; a key that does not exist counts as
	// deleted. When only some keys fail, the error is a *PartialError naming them.
	Delete(ctx context.Context, keys []string) error
}

// CopyInput is one server-side copy within a bucket: the store copies the bytes, which
// never pass through the caller.
type CopyInput struct {
	// Src and Dst are the source's and the copy's full keys.
	Src, Dst string
	// Size is the source's length, as listed: it chooses between one copy and a
	// multipart copy.
	Size int64
	// SrcIfMatch, when set, copies only if the source's ETag is still this one
	// (x-amz-copy-source-if-match): ErrPrecondition otherwise, nothing written.
	SrcIfMatch string
	// Meta, when non-nil, is the copy's complete metadata; nil keeps the source's.
	Meta map[string]string
}
