package objsync

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrFenced means the fence refused (the sandbox lost its lease) or the bucket's
	// marker carries a newer generation: from then on nothing more was written.
	ErrFenced = errors.New("fenced: this writer no longer holds the user's lease")
	// ErrRefused means a safety rule stopped the operation before it could lose data;
	// nothing was deleted and both copies are kept.
	ErrRefused = errors.New("refused by a safety rule")
	// ErrBadKey marks an object whose key cannot be a path inside Dir (absolute, with
	// .. or empty segments, or a symlink leading out of Dir); it is never written.
	ErrBadKey = errors.New("key does not name a path inside the directory")
	// ErrCorrupt marks an object whose content does not match its size or SHA-256.
	ErrCorrupt = errors.New("object content does not match its metadata")
	// ErrConfig marks an invalid argument or setting.
	ErrConfig = errors.New("invalid objsync configuration")
)

// maxListedFailures bounds how many failures PartialError's message spells out.
const maxListedFailures = 5

// Failure is one path or key that an operation could not handle.
type Failure struct {
	// Name is a path relative to Dir, or an object key when no path applies.
	Name string
	// Err says why.
	Err error
}

// PartialError reports an operation that handled some paths but not all. The
// operation did not finish: a sync that returns it has not written the marker.
type PartialError struct {
	// Op is "restore", "sync" or "delete".
	Op string
	// Failures lists what failed, one entry per path or key.
	Failures []Failure
}

// Error names the operation, the count and the first few failures.
func (e *PartialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d failed", e.Op, len(e.Failures))
	for i, f := range e.Failures {
		if i == maxListedFailures {
			fmt.Fprintf(&b, "; and %d more", len(e.Failures)-i)
			break
		}
		fmt.Fprintf(&b, "; %s: %v", f.Name, f.Err)
	}
	return b.String()
}

// Unwrap returns every failure's error, so errors.Is finds ErrCorrupt, ErrBadKey or a
// storage error inside.
func (e *PartialError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f.Err
	}
	return errs
}

// errChanged means a file changed while it was being uploaded; the upload is abandoned
// before its last byte, so the store keeps the previous version.
var errChanged = changedError{}

type changedError struct{}

func (changedError) Error() string { return "file changed while it was read" }

// RetryableError tells the AWS SDK's retryer (which looks for this method) not to
// resend the request: the same bytes would fail the same check again.
func (changedError) RetryableError() bool { return false }
