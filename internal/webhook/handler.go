package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"

	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/sandgate/sandgate/internal/httproute"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Log keys of this package.
const (
	logMessageID = "webhookId"
	logType      = "eventType"
)

// Defaults.
const (
	// MaxBody bounds a request's body: Clerk's user events are a few kilobytes.
	MaxBody = 256 << 10
	// RememberFor is how long a message id is remembered: longer than Svix's retry
	// schedule (about 28 hours in all), and far beyond the signature's 5-minute
	// tolerance, past which the library refuses a replay by its timestamp anyway.
	RememberFor = 72 * time.Hour
	// EventUserDeleted is the one event type acted on.
	EventUserDeleted = "user.deleted"
)

// Secrets gives the current verifier; *secretcache.Cache[*svix.Webhook] is one.
type Secrets interface {
	Get(ctx context.Context) (*svix.Webhook, error)
}

// Messages remembers the message ids acted on; *state.Store is one.
type Messages interface {
	RememberMessage(ctx context.Context, id string, keep time.Duration) (bool, error)
	ForgetMessage(ctx context.Context, id string) error
}

var _ Messages = (*state.Store)(nil)

// Eraser starts the deletion of a user; Invoker is one.
type Eraser interface {
	Erase(ctx context.Context, req EraseRequest) error
}

// EraseRequest is the erase function's event.
type EraseRequest struct {
	UserID string `json:"userId"`
	// WebhookID is the message that asked, for the audit line.
	WebhookID string `json:"webhookId"`
}

// Handler answers POST /webhooks/clerk.
type Handler struct {
	Secret   Secrets
	Messages Messages
	Eraser   Eraser
	Log      *slog.Logger
}

// event is the part of a Clerk event the handler reads.
type event struct {
	Type string `json:"type"`
	Data struct {
		ID string `json:"id"`
	} `json:"data"`
}

// answer is the JSON of every response.
type answer struct {
	Status string `json:"status"`
	UserID string `json:"userId,omitempty"`
	Type   string `json:"type,omitempty"`
}

// Handle verifies the message (Standard Webhooks: svix-id, svix-timestamp within 5
// minutes, an HMAC-SHA256 v1 signature under the whsec_ secret) and acts on it once:
// user.deleted hands the user to the erase function (202); any other type is
// acknowledged and ignored (200), as is a message already acted on (200, "duplicate").
// A forged, unsigned or stale message is 401, a malformed one 400, and a secret or
// table that cannot be read 503: Svix delivers again later.
func (h *Handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := httproute.RequireMethod(req, http.MethodPost); resp != nil {
		return *resp, nil
	}
	body := []byte(req.Body)
	if req.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(req.Body)
		if err != nil {
			return httproute.Refuse(http.StatusBadRequest, "body is not base64"), nil
		}
		body = b
	}
	if len(body) > MaxBody {
		return httproute.Refuse(http.StatusRequestEntityTooLarge, "too large"), nil
	}
	hdr := http.Header{}
	for k, v := range req.Headers {
		hdr.Set(k, v)
	}
	id := firstOf(hdr.Get("svix-id"), hdr.Get("webhook-id"))
	log := h.Log.With(logMessageID, truncate(id, 64))
	wh, err := h.Secret.Get(ctx)
	if err != nil {
		log.ErrorContext(ctx, "webhook not verified: secret unavailable", logging.Error, err.Error())
		return httproute.Refuse(http.StatusServiceUnavailable, "unavailable"), nil
	}
	if err := wh.Verify(body, hdr); err != nil {
		// The library's reasons (missing headers, timestamp too old or too new, no
		// matching signature) hold no secret and no signature.
		log.WarnContext(ctx, "webhook refused", logging.Reason, refusal(err), logging.Error, err.Error())
		return httproute.Refuse(http.StatusUnauthorized, "unauthorized"), nil
	}
	var ev event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type == "" {
		log.WarnContext(ctx, "webhook malformed", logging.Reason, "malformed")
		return httproute.Refuse(http.StatusBadRequest, "malformed event"), nil
	}
	log = log.With(logType, truncate(ev.Type, 64))
	if ev.Type != EventUserDeleted {
		log.InfoContext(ctx, "webhook ignored: not user.deleted")
		return httproute.Respond(http.StatusOK, answer{Status: "ignored", Type: ev.Type}), nil
	}
	if !userid.Valid(ev.Data.ID) {
		// Acknowledged: delivering it again would not make it a sandgate user.
		log.WarnContext(ctx, "webhook ignored: data.id is not a user id", logging.Reason, "bad_user_id")
		return httproute.Respond(http.StatusOK, answer{Status: "ignored", Type: ev.Type}), nil
	}
	log = log.With(logging.UserID, ev.Data.ID)
	first, err := h.Messages.RememberMessage(ctx, id, RememberFor)
	if err != nil {
		log.ErrorContext(ctx, "webhook not acted on: message ids unavailable", logging.Error, err.Error())
		return httproute.Refuse(http.StatusServiceUnavailable, "unavailable"), nil
	}
	if !first {
		log.WarnContext(ctx, "webhook message acted on before; ignored", logging.Reason, "duplicate")
		return httproute.Respond(http.StatusOK, answer{Status: "duplicate", UserID: ev.Data.ID}), nil
	}
	if err := h.Eraser.Erase(ctx, EraseRequest{UserID: ev.Data.ID, WebhookID: id}); err != nil {
		// Not started: forget the id, so Svix's next delivery is acted on.
		if ferr := h.Messages.ForgetMessage(ctx, id); ferr != nil {
			log.ErrorContext(ctx, "forget webhook message failed", logging.Error, ferr.Error())
		}
		log.ErrorContext(ctx, "user deletion not started", logging.Error, err.Error())
		return httproute.Refuse(http.StatusServiceUnavailable, "unavailable"), nil
	}
	log.InfoContext(ctx, "user deletion started")
	return httproute.Respond(http.StatusAccepted, answer{Status: "accepted", UserID: ev.Data.ID}), nil
}

// refusal names why Verify refused, for log queries.
func refusal(err error) string {
	switch m := strings.ToLower(err.Error()); {
	case strings.Contains(m, "missing required headers"), strings.Contains(m, "invalid signature headers"):
		return "malformed"
	case strings.Contains(m, "too old"), strings.Contains(m, "too new"):
		return "stale"
	case strings.Contains(m, "no matching signature"):
		return "bad_signature"
	}
	return "error"
}

// Invoker invokes the erase function asynchronously (Lambda queues the event, retries
// a failed run twice).
type Invoker struct {
	API      InvokeAPI
	Function string
}

// InvokeAPI is the Lambda call Invoker makes.
type InvokeAPI interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// Erase queues req for the erase function.
func (i *Invoker) Erase(ctx context.Context, req EraseRequest) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	out, err := i.API.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(i.Function),
		InvocationType: lambdatypes.InvocationTypeEvent, Payload: payload})
	if err != nil {
		return fmt.Errorf("invoke %s: %w", i.Function, err)
	}
	if out.StatusCode != http.StatusAccepted {
		return fmt.Errorf("invoke %s: status %d", i.Function, out.StatusCode)
	}
	return nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
