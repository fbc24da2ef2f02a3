package template

import (
	"errors"
	"fmt"
)

// Errors that parsing and evaluating a template wrap. An error in a property also
// carries the property's path (a *PathError).
var (
	// ErrUnresolved means a reference names something only the stack knows (a
	// resource's physical name, a pseudo parameter, a dynamic reference) and the
	// Resolver had no value for it.
	ErrUnresolved = errors.New("unresolved reference")
	// ErrUnknownReference means a reference names nothing declared in the template.
	ErrUnknownReference = errors.New("unknown reference")
	// ErrUnsupported means an intrinsic function the local stack cannot evaluate.
	ErrUnsupported = errors.New("unsupported intrinsic function")
	// ErrInvalid means a malformed template or a value of the wrong shape.
	ErrInvalid = errors.New("invalid template")
	// ErrParameter means a parameter override or value breaks the parameter's constraints.
	ErrParameter = errors.New("invalid parameter")
)

// PathError is an error at one property path, such as
// Resources.AuthorizeFunction.Properties.Environment.Variables.SIGNING_SECRET_ID.
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *PathError) Unwrap() error { return e.Err }

func pathErr(path string, err error) error {
	var pe *PathError
	if errors.As(err, &pe) {
		return err // keep the innermost path: it is the most precise
	}
	return &PathError{Path: path, Err: err}
}

func pathErrf(path string, sentinel error, format string, args ...any) error {
	return &PathError{Path: path, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))}
}
