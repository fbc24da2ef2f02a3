package ecslocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sandgate/sandgate/internal/logging"
)

const (
	// targetPrefix starts X-Amz-Target for every ECS operation.
	targetPrefix = "AmazonEC2ContainerServiceV20141113."
	// maxBody bounds a request body; RunTask's largest legal input is far smaller.
	maxBody = 1 << 20
)

// operation decodes one input, records it and handles it.
type operation func(s *Server, ctx context.Context, body []byte) (out any, err *APIError)

func op[In any](name string, handle func(*Server, context.Context, *In) (any, *APIError)) operation {
	return func(s *Server, ctx context.Context, body []byte) (any, *APIError) {
		in := new(In)
		if len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, in); err != nil {
				return nil, apiErr(SerializationException, "decode %s input: %v", name, err)
			}
		}
		s.record(name, in)
		return handle(s, ctx, in)
	}
}

// plain adapts a handler that needs no context.
func plain[In any](handle func(*Server, *In) (any, *APIError)) func(*Server, context.Context, *In) (any, *APIError) {
	return func(s *Server, _ context.Context, in *In) (any, *APIError) { return handle(s, in) }
}

func operations() map[string]operation {
	return map[string]operation{
		"RunTask":                op("RunTask", (*Server).runTask),
		"DescribeTasks":          op("DescribeTasks", plain((*Server).describeTasks)),
		"StopTask":               op("StopTask", plain((*Server).stopTask)),
		"ListTasks":              op("ListTasks", plain((*Server).listTasks)),
		"ListTagsForResource":    op("ListTagsForResource", plain((*Server).listTagsForResource)),
		"DescribeTaskDefinition": op("DescribeTaskDefinition", plain((*Server).describeTaskDefinition)),
	}
}

// serveAPI answers the ECS JSON 1.1 protocol: POST / with X-Amz-Target naming the
// operation. With an Authority, the request's signature is checked first, then (with an
// Authorizer) what it asks; the signature is never logged.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", newUUID())
	name := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)
	log := s.log.With(logOperation, name)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, log, apiErr(SerializationException, "request body is larger than %d bytes", maxBody))
			return
		}
		s.writeError(w, log, apiErr(SerializationException, "read request body: %v", err))
		return
	}
	caller, apiError := s.authenticate(r, body)
	if apiError != nil {
		s.writeError(w, log, apiError)
		return
	}
	if caller != nil {
		log = log.With(logPrincipal, caller.ARN)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		s.writeError(w, log, apiErr(UnknownOperationException, "%s %s is not an ECS operation", r.Method, r.URL.Path))
		return
	}
	handle, ok := s.ops[name]
	if !ok {
		s.writeError(w, log, apiErr(UnknownOperationException, "operation %q is not supported by ecslocal", r.Header.Get("X-Amz-Target")))
		return
	}
	if apiError := s.authorizeCall(r, body, caller); apiError != nil {
		s.writeError(w, log, apiError)
		return
	}
	out, apiError := handle(s, r.Context(), body)
	if apiError != nil {
		s.writeError(w, log, apiError)
		return
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) writeError(w http.ResponseWriter, log *slog.Logger, e *APIError) {
	log.Warn("ecs request refused", logging.Error, e.Error())
	s.writeJSON(w, e.Type.Status(), wireError{Type: e.Type, Message: e.Message, ResourceIDs: e.ResourceIDs})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(wireError{Type: ServerException, Message: fmt.Sprintf("encode response: %v", err)})
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// newUUID returns a random version 4 UUID, the form of ECS request and attachment ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
