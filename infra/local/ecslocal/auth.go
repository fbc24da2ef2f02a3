package ecslocal

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

// errNoTaskDefinition: RunTask names a task definition ecslocal does not have.
var errNoTaskDefinition = errors.New("task definition not found")

// authenticate checks r's SigV4 signature when the server has an Authority, and answers
// a refusal as ECS does. It returns nil without an Authority.
func (s *Server) authenticate(r *http.Request, body []byte) (*identity.Principal, *APIError) {
	if s.Authority == nil {
		return nil, nil
	}
	p, err := s.Authority.Verify(r, identity.ECS, body)
	if err != nil {
		return nil, signatureError(err)
	}
	return p, nil
}

// signatureError maps a refused signature to ECS's error: the JSON 1.1 front's shapes.
func signatureError(err error) *APIError {
	msg := err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) && ae.Detail != "" {
		msg = ae.Detail
	}
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return &APIError{Type: MissingAuthenticationTokenException, Message: "Missing Authentication Token"}
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return &APIError{Type: UnrecognizedClientException, Message: "The security token included in the request is invalid."}
	case errors.Is(err, identity.ErrExpired):
		return &APIError{Type: ExpiredTokenException, Message: "The security token included in the request is expired"}
	case errors.Is(err, identity.ErrMalformed):
		return &APIError{Type: IncompleteSignatureException, Message: msg}
	default: // a wrong signature, a skewed time, another service's or region's scope
		return &APIError{Type: InvalidSignatureException, Message: msg}
	}
}

// iamEnv is where the server's calls are made, for the derivations.
func (s *Server) iamEnv() iampolicy.Env {
	return iampolicy.Env{Region: s.region, Account: s.account}
}

// authorizeCall asks the Authorizer what iampolicy.ECS derives from the call. Nothing is
// allowed that the derivation or the Authorizer cannot decide.
func (s *Server) authorizeCall(r *http.Request, body []byte, caller *identity.Principal) *APIError {
	if s.authz == nil {
		return nil
	}
	reqs, err := iampolicy.ECS(s.iamEnv(), iampolicy.CallOf(r, body), s.resolveForIAM)
	if err == nil {
		err = iampolicy.AuthorizeAll(r.Context(), s.authz, caller, reqs)
	}
	var de *identity.DeniedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &de), errors.Is(err, identity.ErrUnsupported):
		return &APIError{Type: AccessDeniedException, Message: err.Error()}
	case errors.Is(err, errNoTaskDefinition):
		return apiErr(ClientException, "TaskDefinition not found.")
	case errors.Is(err, iampolicy.ErrMalformed):
		if !json.Valid(body) {
			return apiErr(SerializationException, "%v", err)
		}
		return invalid("%v", err)
	default:
		return apiErr(ServerException, "authorize: %v", err)
	}
}

// resolveForIAM resolves RunTask's task definition for its derivation: the full ARN and
// the roles it passes.
func (s *Server) resolveForIAM(ref string) (iampolicy.ECSTaskDefinition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.resolveDefLocked(ref)
	if !ok {
		return iampolicy.ECSTaskDefinition{}, errNoTaskDefinition
	}
	return iampolicy.ECSTaskDefinition{ARN: d.arn, TaskRoleARN: d.taskRole, ExecutionRoleARN: d.execRole}, nil
}
