package lambdart

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// Handler serves the Lambda Invoke API (POST /2015-03-31/functions/{name}/invocations)
// so the aws-sdk-go-v2 lambda client, pointed at the local stack, can invoke functions:
// RequestResponse (default), Event (202, asynchronous) and DryRun (204); and the
// reserved concurrency operations (Put, Get and DeleteFunctionConcurrency), of which
// the runtime enforces 0: a throttled function's synchronous invocations are answered
// 429 TooManyRequestsException, its asynchronous ones queued and retried. With
// Authority set every request must be SigV4-signed for "lambda"; with Authorizer set
// too it must be allowed lambda:InvokeFunction on the function's ARN (qualified when
// the call names a qualifier), before the function is even looked up, as in AWS.
func (r *Runtime) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", r.serveInvoke)
	mux.HandleFunc("PUT /2017-10-31/functions/{name}/concurrency", r.serveConcurrency)
	mux.HandleFunc("DELETE /2017-10-31/functions/{name}/concurrency", r.serveConcurrency)
	mux.HandleFunc("GET /2019-09-30/functions/{name}/concurrency", r.serveConcurrency)
	return mux
}

func (r *Runtime) serveInvoke(w http.ResponseWriter, req *http.Request) {
	name := functionName(req.PathValue("name"))
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxPayloadBytes+1))
	if err != nil {
		invokeError(w, http.StatusBadRequest, "InvalidRequestContentException", err.Error())
		return
	}
	if len(body) > MaxPayloadBytes {
		invokeError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	if !r.authorizeInvoke(w, req, body) {
		return
	}
	if _, err := r.pool(name); err != nil {
		if errors.Is(err, ErrClosed) {
			invokeError(w, http.StatusServiceUnavailable, "ServiceException", "runtime closed")
			return
		}
		invokeError(w, http.StatusNotFound, "ResourceNotFoundException", "Function not found: "+r.arn(name))
		return
	}
	switch req.Header.Get("X-Amz-Invocation-Type") {
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		if err := r.InvokeAsync(name, body); err != nil {
			invokeError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request must be smaller than 1048576 bytes for the InvokeAsync operation")
			return
		}
		w.WriteHeader(http.StatusAccepted)
		return
	case "", "RequestResponse":
	default:
		invokeError(w, http.StatusBadRequest, "InvalidParameterValueException", "unknown X-Amz-Invocation-Type")
		return
	}
	out, err := r.Invoke(req.Context(), name, body)
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	w.Header().Set("Content-Type", "application/json")
	var fe *FunctionError
	switch {
	case errors.Is(err, ErrThrottled):
		w.Header().Del("X-Amz-Executed-Version")
		throttledError(w, err)
	case errors.As(err, &fe):
		// Lambda answers 200 for a failed function; the header tells it apart.
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(fe.Payload)
	case err != nil:
		invokeError(w, http.StatusInternalServerError, "ServiceException", err.Error())
	default:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	}
}

// functionName accepts a name, a name:qualifier, or a full or partial ARN.
func functionName(s string) string {
	if i := strings.Index(s, "function:"); i >= 0 {
		s = s[i+len("function:"):]
	}
	name, _, _ := strings.Cut(s, ":")
	return name
}

func invokeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("X-Amzn-Errortype", typ)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"Type": "User", "message": msg})
	_, _ = w.Write(b)
}

// authorizeInvoke verifies and authorises an Invoke API request. It answers a refusal
// as Lambda does and returns false.
func (r *Runtime) authorizeInvoke(w http.ResponseWriter, req *http.Request, body []byte) bool {
	if r.Authority == nil {
		return true
	}
	p, err := r.Authority.Verify(req, identity.Lambda, body)
	if err != nil {
		status, typ, msg := signatureError(err)
		keyID := ""
		if ae := (*identity.AuthError)(nil); errors.As(err, &ae) {
			keyID = ae.AccessKeyID
		}
		r.log.Info("invoke refused", logging.Reason, err.Error(), "accessKeyId", keyID)
		invokeError(w, status, typ, msg)
		return false
	}
	if r.Authorizer == nil {
		return true
	}
	reqs, err := iampolicy.Lambda(r.env(), iampolicy.CallOf(req, body))
	if err == nil {
		err = iampolicy.AuthorizeAll(req.Context(), r.Authorizer, p, reqs)
	}
	if err == nil {
		return true
	}
	r.log.Info("invoke refused", logging.Reason, err.Error(), keyPrincipal, p.ARN)
	if errors.Is(err, iampolicy.ErrMalformed) {
		invokeError(w, http.StatusBadRequest, "InvalidParameterValueException", err.Error())
		return false
	}
	// A denial, a request the evaluator cannot decide (identity.ErrUnsupported: "unsupported
	// by the local stack: …") or an evaluator that failed: refused, never allowed.
	accessDenied(w, err.Error())
	return false
}

// signatureError maps a refused signature to Lambda's answer.
func signatureError(err error) (status int, typ, msg string) {
	msg = err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) && ae.Detail != "" {
		msg = ae.Detail
	}
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return http.StatusForbidden, "UnrecognizedClientException", "The security token included in the request is invalid."
	case errors.Is(err, identity.ErrExpired):
		return http.StatusForbidden, "ExpiredTokenException", "The security token included in the request is expired"
	case errors.Is(err, identity.ErrMalformed):
		return http.StatusForbidden, "IncompleteSignatureException", msg
	default: // a signature that does not match, a skewed time, another scope
		return http.StatusForbidden, "InvalidSignatureException", msg
	}
}

// accessDenied writes Lambda's AccessDeniedException, whose body carries the message
// as "Message" ("User: <arn> is not authorized to perform: lambda:InvokeFunction on
// resource: <arn> because …").
func accessDenied(w http.ResponseWriter, msg string) {
	w.Header().Set("X-Amzn-Errortype", "AccessDeniedException")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	b, _ := json.Marshal(map[string]string{"Message": msg})
	_, _ = w.Write(b)
}
