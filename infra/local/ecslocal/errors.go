package ecslocal

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors of the Go API (the wire API answers with *APIError instead).
var (
	// ErrInvalidTaskDefinition wraps every reason RegisterTaskDefinition refuses a definition.
	ErrInvalidTaskDefinition = errors.New("invalid task definition")
	// ErrInvalidConfig wraps every reason Start refuses the server's configuration.
	ErrInvalidConfig = errors.New("invalid ecslocal configuration")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("ecslocal server closed")
)

// ErrorType is the __type of an ECS error response; the SDK turns it into the error type
// of the same name (types.ClientException, types.InvalidParameterException, …).
type ErrorType string

// Error types ECS answers with. ThrottlingException and ServiceUnavailableException are
// AWS-wide, not ECS shapes: the SDK reports them as a generic smithy.APIError with that code
// and retries them (as a throttle, and for the 503).
const (
	AccessDeniedException       ErrorType = "AccessDeniedException"
	ClientException             ErrorType = "ClientException"
	ClusterNotFoundException    ErrorType = "ClusterNotFoundException"
	ConflictException           ErrorType = "ConflictException"
	InvalidParameterException   ErrorType = "InvalidParameterException"
	LimitExceededException      ErrorType = "LimitExceededException"
	ServerException             ErrorType = "ServerException"
	ServiceUnavailableException ErrorType = "ServiceUnavailableException"
	ThrottlingException         ErrorType = "ThrottlingException"
	SerializationException      ErrorType = "SerializationException"
	UnknownOperationException   ErrorType = "UnknownOperationException"
)

// Error types of a refused signature, as every JSON 1.1 service answers them (400).
const (
	MissingAuthenticationTokenException ErrorType = "MissingAuthenticationTokenException"
	UnrecognizedClientException         ErrorType = "UnrecognizedClientException"
	InvalidSignatureException           ErrorType = "InvalidSignatureException"
	IncompleteSignatureException        ErrorType = "IncompleteSignatureException"
	ExpiredTokenException               ErrorType = "ExpiredTokenException"
)

// Status returns the HTTP status ECS answers the error with: 500 for server faults, 503
// when unavailable, 400 for everything the caller did (throttling included).
func (t ErrorType) Status() int {
	switch t {
	case ServerException:
		return http.StatusInternalServerError
	case ServiceUnavailableException:
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadRequest
	}
}

// APIError is an error as the endpoint answers it on the wire.
type APIError struct {
	Type    ErrorType
	Message string
	// ResourceIDs is set on a ConflictException: the tasks already started with the token.
	ResourceIDs []string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s", e.Type, e.Message) }

func apiErr(t ErrorType, format string, args ...any) *APIError {
	return &APIError{Type: t, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *APIError {
	return apiErr(InvalidParameterException, format, args...)
}
