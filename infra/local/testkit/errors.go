package testkit

import (
	"errors"

	"github.com/aws/smithy-go"
)

// ErrorCode returns the service's error code an SDK call failed with ("" when err is
// not an API error), for tests asserting that an emulator answers as the service does.
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
