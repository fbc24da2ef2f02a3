package preflight

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Error codes AWS services answer when the caller may not make a call: IAM's and most
// Query services' AccessDenied, the JSON services' AccessDeniedException, EC2's
// UnauthorizedOperation, and S3's bodiless 403 to a HEAD.
var deniedCodes = map[string]bool{
	"AccessDenied":          true,
	"AccessDeniedException": true,
	"UnauthorizedOperation": true,
	"AuthorizationError":    true,
	"Forbidden":             true,
}

// Error codes for credentials the service does not accept: unknown, mis-signed or
// expired (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html and
// each service's common errors).
var rejectedCodes = map[string]bool{
	"InvalidClientTokenId":                true,
	"UnrecognizedClientException":         true,
	"InvalidAccessKeyId":                  true,
	"SignatureDoesNotMatch":               true,
	"InvalidSignatureException":           true,
	"IncompleteSignature":                 true,
	"IncompleteSignatureException":        true,
	"MissingAuthenticationToken":          true,
	"MissingAuthenticationTokenException": true,
	"ExpiredToken":                        true,
	"ExpiredTokenException":               true,
	"RequestExpired":                      true,
	"AuthFailure":                         true,
	"InvalidToken":                        true,
}

// fixCredentials is the one-line fix for credentials that are missing or refused.
const fixCredentials = "sign in with the credentials you deploy with: aws sso login --profile <profile> and AWS_PROFILE=<profile> (or -profile), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN"

// errorCode returns an AWS error's code, "" for an error without one.
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// httpStatus returns the HTTP status of the response an error came with, 0 without one.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isDenied reports an authorization refusal.
func isDenied(err error) bool {
	return deniedCodes[errorCode(err)] || errorCode(err) == "" && httpStatus(err) == http.StatusForbidden
}

// failed turns an error of a call the check needed into a failed result for an
// operator: refused credentials, a denied action (naming the IAM action to grant), or
// the service's own code and message — one line each, never a stack trace.
func failed(check, action string, err error) Result {
	code := errorCode(err)
	switch {
	case rejectedCodes[code]:
		return Result{Check: check, Status: Fail,
			Summary: fmt.Sprintf("%s: the credentials were refused (%s: %s)", action, code, apiMessage(err)),
			Fix:     fixCredentials}
	case isDenied(err):
		return Result{Check: check, Status: Fail,
			Summary: fmt.Sprintf("access denied: these credentials may not call %s (%s)", action, oneLine(apiMessage(err))),
			Fix:     fmt.Sprintf("run preflight with the credentials you deploy with, or grant them %s", action)}
	case code != "":
		return Result{Check: check, Status: Fail, Summary: fmt.Sprintf("%s failed: %s: %s", action, code, oneLine(apiMessage(err)))}
	}
	return Result{Check: check, Status: Fail, Summary: fmt.Sprintf("%s failed: %s", action, oneLine(err.Error()))}
}

// apiMessage returns an AWS error's message, else the error's text.
func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if m := ae.ErrorMessage(); m != "" {
			return m
		}
		return ae.ErrorCode()
	}
	return err.Error()
}

// oneLine keeps an error's text on one line of a readable length.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}
