package identity

import "errors"

// Reasons a request's signature is refused. Each emulator answers them with its own
// service's error shape; Reason says which one applies.
var (
	// ErrUnsigned: no Authorization header and no presigned query.
	ErrUnsigned = errors.New("request is not signed")
	// ErrMalformed: a signature is present but not of SigV4's form.
	ErrMalformed = errors.New("malformed signature")
	// ErrUnknownKey: the access key id was never issued by this stack.
	ErrUnknownKey = errors.New("unknown access key id")
	// ErrBadToken: a session's key came without its session token, or with another.
	ErrBadToken = errors.New("invalid security token")
	// ErrBadSignature: the signature does not match the request.
	ErrBadSignature = errors.New("signature does not match")
	// ErrExpired: the session's credentials have expired.
	ErrExpired = errors.New("security token expired")
	// ErrSkewed: the request's time is more than MaxSkew from the stack's clock, or a
	// presigned request is past its expiry.
	ErrSkewed = errors.New("request time too skewed")
	// ErrScope: the credential scope names another service, region or date.
	ErrScope = errors.New("credential scope does not match")
)

// AuthError is a refused signature: Reason is one of the sentinels above, Detail what
// the service would say about it.
type AuthError struct {
	Reason error
	Detail string
	// AccessKeyID is the key the request named, when it named one.
	AccessKeyID string
}

func (e *AuthError) Error() string {
	if e.Detail == "" {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Detail
}

// Is matches the reason.
func (e *AuthError) Is(target error) bool { return target == e.Reason }

// Unwrap returns the reason.
func (e *AuthError) Unwrap() error { return e.Reason }
