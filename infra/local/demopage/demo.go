package demopage

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/userid"
)

//go:embed static
var static embed.FS

// Sandboxes is what the restart endpoint needs of the stack.
type Sandboxes interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
}

// Stopper stops a task (the launcher).
type Stopper interface {
	Stop(ctx context.Context, arn, reason string) error
}

// Objects lists the bucket (an S3 client).
type Objects interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// Handler serves the page and the dev endpoints.
type Handler struct {
	Signer    *auth.Signer
	WSURL     string // the WebSocket stage URL
	HTTPURL   string // the HTTP API stage URL (status, prewarm)
	Sandboxes Sandboxes
	Tasks     Stopper
	Objects   Objects
	Bucket    string
	// Operator serves the operator panel (list, inspect, stop, revoke); nil leaves the
	// panel's endpoints out.
	Operator Operator
	Log      *slog.Logger
}

// Register mounts the handler's routes on mux.
func (h *Handler) Register(mux interface {
	Handle(pattern string, handler http.Handler)
}) {
	page, _ := fs.Sub(static, "static")
	mux.Handle("GET /{$}", http.FileServerFS(page))
	mux.Handle("GET /demo.js", http.FileServerFS(page))
	mux.Handle("GET /demo.css", http.FileServerFS(page))
	mux.Handle("GET /dev/sign", http.HandlerFunc(h.sign))
	mux.Handle("POST /dev/restart", http.HandlerFunc(h.restart))
	mux.Handle("GET /dev/files", http.HandlerFunc(h.files))
	if h.Operator != nil {
		h.registerOperator(mux)
	}
}

func (h *Handler) user(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.URL.Query().Get("userId")
	if !userid.Valid(id) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "userId must be user_ followed by 1-64 letters or digits"})
		return "", false
	}
	return id, true
}

// sign returns a signed URL for any user: the development stand-in for a product's
// backend, which signs for the user it has authenticated.
func (h *Handler) sign(w http.ResponseWriter, r *http.Request) {
	id, ok := h.user(w, r)
	if !ok {
		return
	}
	signed, err := h.Signer.Sign(id)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"url":    h.WSURL + "?" + signed.Query(),
		"status": strings.TrimSuffix(h.HTTPURL, "/") + "/status?" + signed.Query(),
	})
}

// restart stops the user's task as Fargate would (SIGTERM, then the stop timeout): the
// agent syncs and stops, and the next frame starts a fresh sandbox that restores.
func (h *Handler) restart(w http.ResponseWriter, r *http.Request) {
	id, ok := h.user(w, r)
	if !ok {
		return
	}
	sb, err := h.Sandboxes.Get(r.Context(), id)
	if errors.Is(err, state.ErrNotFound) || (err == nil && sb.TaskARN == "") {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no sandbox for " + id})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	if err := h.Tasks.Stop(r.Context(), sb.TaskARN, "restarted from the demo page"); err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	h.Log.Info("demo: sandbox restart requested", logging.UserID, id, logging.TaskARN, sb.TaskARN)
	writeJSON(w, http.StatusAccepted, map[string]string{"stopping": sb.TaskARN, "state": string(sb.State)})
}

// files lists the user's stored files: what the bucket holds under the user's prefix
// and nothing of anyone else's.
func (h *Handler) files(w http.ResponseWriter, r *http.Request) {
	id, ok := h.user(w, r)
	if !ok {
		return
	}
	prefix := taskenv.UserPrefix(id)
	out, err := h.Objects.ListObjectsV2(r.Context(), &s3.ListObjectsV2Input{
		Bucket: aws.String(h.Bucket), Prefix: aws.String(prefix), MaxKeys: aws.Int32(200),
	})
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	keys := []string{}
	for _, o := range out.Contents {
		keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), prefix))
	}
	writeJSON(w, http.StatusOK, map[string]any{"prefix": prefix, "keys": keys})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
