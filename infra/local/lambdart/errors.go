package lambdart

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Errors returned by Invoke. A failed invocation is a *FunctionError whose Unwrap
// gives one of the kinds below, so callers can use errors.Is.
var (
	ErrUnknownFunction = errors.New("function not found")
	ErrClosed          = errors.New("runtime closed")
	ErrPayloadTooLarge = errors.New("request payload too large")

	// ErrHandler: the handler returned an error (the runtime posted .../error).
	ErrHandler = errors.New("function error")
	// ErrTimeout: the invocation ran past the function's timeout; the process was killed.
	ErrTimeout = errors.New("task timed out")
	// ErrExit: the process exited during the invocation or its init (Runtime.ExitError).
	ErrExit = errors.New("runtime exited")
	// ErrInit: the runtime reported an init error (.../init/error).
	ErrInit = errors.New("init error")
	// ErrResponseTooLarge: the response exceeded Lambda's 6 MB limit.
	ErrResponseTooLarge = errors.New("response too large")
)

// Error types Lambda reports for failures of the runtime rather than the handler.
const (
	TypeTimeout          = "Sandbox.Timedout"
	TypeExit             = "Runtime.ExitError"
	TypeInit             = "Runtime.InitError"
	TypeResponseTooLarge = "Function.ResponseSizeTooLarge"
)

// FunctionError is a failed invocation, as Lambda reports it to the caller: the
// errorType and errorMessage of the payload returned with X-Amz-Function-Error.
type FunctionError struct {
	Function  string
	RequestID string
	Type      string
	Message   string
	// Payload is the JSON body Lambda returns for the failure.
	Payload []byte
	kind    error
}

func (e *FunctionError) Error() string {
	return fmt.Sprintf("invoke %s: %s: %s", e.Function, e.Type, e.Message)
}

// Unwrap returns the failure's kind: ErrHandler, ErrTimeout, ErrExit, ErrInit or
// ErrResponseTooLarge.
func (e *FunctionError) Unwrap() error { return e.kind }

// errorPayload is the error document runtimes post and Lambda returns.
type errorPayload struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType,omitempty"`
	StackTrace   []string `json:"stackTrace,omitempty"`
}

// platformError builds the error Lambda itself reports (timeout, exit), in its format:
// "RequestId: <id> Error: <message>".
func platformError(fn, requestID, typ, msg string, kind error) *FunctionError {
	full := "RequestId: " + requestID + " Error: " + msg
	b, _ := json.Marshal(errorPayload{ErrorType: typ, ErrorMessage: full})
	return &FunctionError{Function: fn, RequestID: requestID, Type: typ, Message: full, Payload: b, kind: kind}
}
