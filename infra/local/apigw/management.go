package apigw

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/logging"
)

// Error types of the management API, sent in x-amzn-ErrorType as the service does.
const (
	errGone            = "GoneException"
	errForbidden       = "ForbiddenException"
	errPayloadTooLarge = "PayloadTooLargeException"
	errBadSignature    = "InvalidSignatureException"
)

// serveConnections is the @connections management API: POST sends a message, GET
// describes the connection, DELETE closes it. A connection is "gone" (410) unless it
// is open: unknown, still in its $connect, or closed.
func (s *Server) serveConnections(w http.ResponseWriter, r *http.Request) {
	if st := r.PathValue("stage"); st != "" && st != s.cfg.WebSocket.Stage {
		mgmtError(w, http.StatusForbidden, errForbidden, "Forbidden")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.MaxMessageBytes)+1))
	if err != nil {
		mgmtError(w, http.StatusBadRequest, "BadRequestException", "could not read body")
		return
	}
	if ref := s.checkCaller(r, body); ref != nil {
		if ref.upper {
			w.Header().Set("x-amzn-ErrorType", ref.typ)
			writeMessage(w, ref.status, ref.msg)
			return
		}
		mgmtError(w, ref.status, ref.typ, ref.msg)
		return
	}
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodPost:
		if len(body) > s.MaxMessageBytes {
			mgmtError(w, http.StatusRequestEntityTooLarge, errPayloadTooLarge, "Request entity too large")
			return
		}
		c := s.lookup(id)
		if c == nil {
			mgmtError(w, http.StatusGone, errGone, "")
			return
		}
		typ := websocket.MessageText
		if !utf8.Valid(body) {
			typ = websocket.MessageBinary
		}
		// Not the request's context: a caller that gives up mid-post must not close the
		// client's connection, which a cancelled write does and API Gateway does not.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		if err := c.ws.Write(ctx, typ, body); err != nil {
			c.log.Info("post to closing connection", logging.Error, err.Error())
			mgmtError(w, http.StatusGone, errGone, "")
			return
		}
		c.touch()
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		c := s.lookup(id)
		if c == nil {
			mgmtError(w, http.StatusGone, errGone, "")
			return
		}
		const iso = "2006-01-02T15:04:05.000Z"
		b, _ := json.Marshal(map[string]any{
			"connectedAt":  c.connectedAt.UTC().Format(iso),
			"lastActiveAt": c.lastActiveAt().UTC().Format(iso),
			"identity":     map[string]string{"sourceIp": c.sourceIP, "userAgent": c.userAgent},
		})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	case http.MethodDelete:
		c := s.lookup(id)
		if c == nil {
			mgmtError(w, http.StatusGone, errGone, "")
			return
		}
		c.log.Info("closing", logging.Reason, "deleted")
		c.closeWith(closeNormal, "", reasonDeleted)
		w.WriteHeader(http.StatusNoContent)
	default:
		mgmtError(w, http.StatusForbidden, errForbidden, "Missing Authentication Token")
	}
}

// mgmtError writes an error the way the service does: the type in x-amzn-ErrorType,
// a JSON body with the message (empty for GoneException, which carries none).
func mgmtError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("x-amzn-ErrorType", typ)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if msg == "" {
		_, _ = io.WriteString(w, "{}")
		return
	}
	b, _ := json.Marshal(map[string]string{"message": msg})
	_, _ = w.Write(b)
}

// writeMessage writes {"Message": msg}, the body of the IAM denial.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"Message": msg})
	_, _ = w.Write(b)
}
