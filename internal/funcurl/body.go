package funcurl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
)

// DecodeBody decodes a function URL request's JSON body into v: text (not base64), at
// most max bytes, no field v does not know. The errors name what was wrong, for the
// caller's 400.
func DecodeBody(ev events.LambdaFunctionURLRequest, max int, v any) error {
	if ev.IsBase64Encoded {
		return errors.New("binary body")
	}
	if len(ev.Body) > max {
		return fmt.Errorf("body of %d bytes", len(ev.Body))
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(ev.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}
