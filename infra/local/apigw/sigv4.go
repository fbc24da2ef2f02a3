package apigw

import (
	"errors"
	"net/http"
	"strings"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// Error types of the management API's refusals of a caller, in x-amzn-ErrorType.
const (
	errUnrecognizedClient  = "UnrecognizedClientException"
	errExpiredToken        = "ExpiredTokenException"
	errIncompleteSignature = "IncompleteSignatureException"
	errAccessDenied        = "AccessDeniedException"
)

// refusal is how the management API answers a caller it refuses.
type refusal struct {
	status int
	typ    string
	msg    string
	// upper writes the message as "Message", as the IAM denial does.
	upper bool
}

// checkCaller verifies r's SigV4 signature with the Authority and authorises the call
// with the Authorizer; it returns nil when the request may proceed. Without an
// Authority it only requires a signature of SigV4's form, as the management API
// never takes an unsigned request.
func (s *Server) checkCaller(r *http.Request, body []byte) *refusal {
	if s.Authority == nil {
		return wellFormed(r)
	}
	p, err := s.Authority.Verify(r, identity.ExecuteAPI, body)
	if err != nil {
		ref := signatureRefusal(err)
		var ae *identity.AuthError
		keyID := ""
		if errors.As(err, &ae) {
			keyID = ae.AccessKeyID
		}
		s.log.Info("management api request refused", logging.Reason, err.Error(), "accessKeyId", keyID)
		return ref
	}
	if s.Authorizer == nil {
		return nil
	}
	ws := s.cfg.WebSocket
	env := iampolicy.Env{Region: s.Region, Account: s.AccountID}
	reqs, err := iampolicy.ManagementAPI(env, ws.APIID, ws.Stage, iampolicy.CallOf(r, body))
	if err == nil {
		err = iampolicy.AuthorizeAll(r.Context(), s.Authorizer, p, reqs)
	}
	if err == nil {
		return nil
	}
	s.log.Info("management api request refused", logging.Reason, err.Error(), "principal", p.ARN)
	if errors.Is(err, iampolicy.ErrMalformed) {
		return &refusal{status: http.StatusBadRequest, typ: "BadRequestException", msg: err.Error()}
	}
	// A denial ("User: <arn> is not authorized to perform: execute-api:ManageConnections
	// on resource: <arn> because …"), a request the evaluator cannot decide
	// ("unsupported by the local stack: …") or a failed evaluator: refused.
	return &refusal{status: http.StatusForbidden, typ: errAccessDenied, msg: err.Error(), upper: true}
}

// signatureRefusal maps a refused signature to the management API's answer.
func signatureRefusal(err error) *refusal {
	msg := err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) && ae.Detail != "" {
		msg = ae.Detail
	}
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return &refusal{status: http.StatusForbidden, typ: errForbidden, msg: "Missing Authentication Token"}
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return &refusal{status: http.StatusForbidden, typ: errUnrecognizedClient, msg: "The security token included in the request is invalid."}
	case errors.Is(err, identity.ErrExpired):
		return &refusal{status: http.StatusForbidden, typ: errExpiredToken, msg: "The security token included in the request is expired"}
	case errors.Is(err, identity.ErrMalformed):
		return &refusal{status: http.StatusForbidden, typ: errIncompleteSignature, msg: msg}
	default: // a signature that does not match, a skewed time, another scope
		return &refusal{status: http.StatusForbidden, typ: errBadSignature, msg: msg}
	}
}

// wellFormed requires a SigV4 Authorization header without verifying it.
func wellFormed(r *http.Request) *refusal {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return &refusal{status: http.StatusForbidden, typ: errForbidden, msg: "Missing Authentication Token"}
	}
	alg, rest, _ := strings.Cut(auth, " ")
	if alg != identity.Algorithm {
		return &refusal{status: http.StatusForbidden, typ: errIncompleteSignature, msg: "Unsupported authorization type"}
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		params[k] = v
	}
	scope := strings.Split(params["Credential"], "/")
	if len(scope) != 5 || params["SignedHeaders"] == "" || params["Signature"] == "" || scope[4] != "aws4_request" {
		return &refusal{status: http.StatusForbidden, typ: errIncompleteSignature, msg: "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters"}
	}
	return nil
}
