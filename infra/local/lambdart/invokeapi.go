package lambdart

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// Handler serves the Lambda Invoke API (POST /2015-03-31/functions/{name}/invocations)
// so the aws-sdk-go-v2 lambda client, pointed at the local stack, can invoke functions:
// RequestResponse (default), Event (202, asynchronous) and DryRun (204).
func (r *Runtime) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", r.serveInvoke)
	return mux
}

func (r *Runtime) serveInvoke(w http.ResponseWriter, req *http.Request) {
	name := functionName(req.PathValue("name"))
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxPayloadBytes+1))
	if err != nil {
		invokeError(w, http.StatusBadRequest, "InvalidRequestContentException", err.Error())
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
	if len(body) > MaxPayloadBytes {
		invokeError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	out, err := r.Invoke(req.Context(), name, body)
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	w.Header().Set("Content-Type", "application/json")
	var fe *FunctionError
	switch {
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
