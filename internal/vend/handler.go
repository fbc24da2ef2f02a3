package vend

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/userid"
)

// Session lengths: AssumeRole's least, and the most a role session may last when the
// caller is itself a role session (role chaining), as the vendor is.
const (
	MinSessionDuration     = 15 * time.Minute
	MaxSessionDuration     = time.Hour
	DefaultSessionDuration = MaxSessionDuration
)

// MaxRequestBytes bounds a credentials request.
const MaxRequestBytes = 4 << 10

// Records is the state the vendor reads: one GetItem of the user's sandbox record.
type Records interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
}

var _ Records = (*state.Store)(nil)

// STS is the part of the STS client the vendor uses.
type STS interface {
	AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleOutput, error)
}

// StorageMinter mints temporary credentials of the bucket scoped to one prefix (R2's
// temporary access credentials), valid for at most ttl.
type StorageMinter interface {
	Mint(ctx context.Context, prefix string, ttl time.Duration) (StorageCredentials, error)
}

// Handler is the vendor function: it answers a task's request with credentials scoped
// to the user when, and only when, the calling task is the one the user's record
// names, with the record's current lease token and generation, in a live state.
type Handler struct {
	Records Records
	STS     STS
	// Storage mints the storage credentials when the bucket is not AWS S3; nil for S3,
	// whose access the session's own policies scope.
	Storage StorageMinter
	// TaskRole is the name and Account the account of the role every sandbox task runs
	// as: only its sessions may ask.
	TaskRole, Account string
	// SandboxRole is the ARN of the role the credentials are a session of.
	SandboxRole string
	// Cluster is the name of the cluster the sandboxes run in.
	Cluster string
	// Duration is the session's length (DefaultSessionDuration).
	Duration time.Duration
	// ECS and Pool, when both set, let warm pool tasks register (PathPoolRegister):
	// ECS describes the caller's task, Pool records its pool item.
	ECS  ECS
	Pool Pool
	// AgentPort is the agent's port in a registered pool task's endpoint
	// (DefaultAgentPort); StartedBy marks the launcher's tasks (DefaultStartedBy).
	AgentPort int
	StartedBy string
	Log       *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Handle answers one function URL request.
func (h *Handler) Handle(ctx context.Context, ev events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ev.RequestContext.HTTP.Method != http.MethodPost || ev.RawPath != PathCredentials && ev.RawPath != PathPoolRegister {
		log.WarnContext(ctx, "not a credentials request", logMethod, ev.RequestContext.HTTP.Method, logPath, ev.RawPath)
		return refuse(http.StatusNotFound, CodeBadRequest, false), nil
	}
	caller, err := funcurl.CallerOf(ev)
	if err != nil {
		log.WarnContext(ctx, "credentials refused", logging.Reason, ReasonNotTask, logging.Error, err.Error())
		return refuse(http.StatusForbidden, CodeRefused, false), nil
	}
	log = log.With(logCaller, caller.ARN)
	if !caller.Is(h.TaskRole, h.Account) {
		log.WarnContext(ctx, "credentials refused", logging.Reason, ReasonNotTask)
		return refuse(http.StatusForbidden, CodeRefused, false), nil
	}
	if ev.RawPath == PathPoolRegister {
		return h.register(ctx, log, caller, ev), nil
	}
	req, err := decode(ev)
	if err != nil {
		log.WarnContext(ctx, "credentials refused", logging.Reason, ReasonBadRequest, logging.Error, err.Error())
		return refuse(http.StatusBadRequest, CodeBadRequest, false), nil
	}
	log = log.With(logging.UserID, req.UserID, logGeneration, req.Generation)
	creds, reason, err := h.vend(ctx, caller, req)
	switch {
	case err != nil:
		log.ErrorContext(ctx, "credentials unavailable", logging.Error, err.Error())
		return refuse(http.StatusServiceUnavailable, CodeUnavailable, true), nil
	case reason == ReasonNotRecorded:
		log.InfoContext(ctx, "credentials deferred: the record names no task yet", logging.Reason, reason)
		return refuse(http.StatusConflict, CodeNotRecorded, true), nil
	case reason != "":
		log.WarnContext(ctx, "credentials refused", logging.Reason, reason)
		return refuse(http.StatusForbidden, CodeRefused, false), nil
	}
	log.InfoContext(ctx, "credentials vended", logExpiration, creds.Expiration, logStorage, creds.Storage != nil)
	b, err := json.Marshal(creds)
	if err != nil {
		return events.LambdaFunctionURLResponse{}, err
	}
	return events.LambdaFunctionURLResponse{StatusCode: http.StatusOK, Headers: jsonHeaders(), Body: string(b)}, nil
}

// Reasons a request is refused or deferred, for the vendor's log.
const (
	ReasonNotTask     = "not_task_role"     // not a session of the task role
	ReasonBadRequest  = "bad_request"       // no user id, generation or token
	ReasonNoRecord    = "no_record"         // the user has no sandbox record
	ReasonToken       = "lease_token"       // not the record's lease token
	ReasonGeneration  = "generation"        // not the record's generation
	ReasonNotLive     = "not_live"          // the record is STOPPED, PURGING or past its lease
	ReasonOtherTask   = "other_task"        // the record names another task
	ReasonNotRecorded = "task_not_recorded" // right lease, no task recorded yet
)

// vend decides: credentials, or the reason they are refused; err when the decision
// could not be made or carried out.
func (h *Handler) vend(ctx context.Context, caller funcurl.Caller, req Request) (Credentials, string, error) {
	sb, err := h.Records.Get(ctx, req.UserID)
	if errors.Is(err, state.ErrNotFound) {
		return Credentials{}, ReasonNoRecord, nil
	}
	if err != nil {
		return Credentials{}, "", fmt.Errorf("read the sandbox record: %w", err)
	}
	if reason := h.check(caller, req, sb); reason != "" {
		return Credentials{}, reason, nil
	}
	d := h.Duration
	if d <= 0 {
		d = DefaultSessionDuration
	}
	out, err := h.STS.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(h.SandboxRole),
		// CloudTrail, and every log of the services, name the task.
		RoleSessionName: aws.String(caller.Session),
		Tags:            []ststypes.Tag{{Key: aws.String(TagUserID), Value: aws.String(req.UserID)}},
		DurationSeconds: aws.Int32(int32(d / time.Second)),
	})
	if err != nil {
		return Credentials{}, "", fmt.Errorf("assume the sandbox role: %w", err)
	}
	c := out.Credentials
	if c == nil || c.Expiration == nil {
		return Credentials{}, "", errors.New("assume the sandbox role: no credentials in the answer")
	}
	creds := Credentials{
		AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken: aws.ToString(c.SessionToken), Expiration: c.Expiration.UTC(),
	}
	if h.Storage != nil {
		sc, err := h.Storage.Mint(ctx, taskenv.UserPrefix(req.UserID), creds.Expiration.Sub(h.now()))
		if err != nil {
			return Credentials{}, "", fmt.Errorf("mint storage credentials: %w", err)
		}
		creds.Storage = &sc
	}
	return creds, "", nil
}

// check compares the request and the calling task with the record: "" when they are
// the record's current holder's, else the reason. The token is compared in constant
// time, and before anything else about the record, so a caller without it learns
// nothing more.
func (h *Handler) check(caller funcurl.Caller, req Request, sb *state.Sandbox) string {
	if subtle.ConstantTimeCompare([]byte(sb.LeaseToken), []byte(req.LeaseToken)) != 1 {
		return ReasonToken
	}
	if sb.Generation != req.Generation {
		return ReasonGeneration
	}
	if !sb.Live(h.now()) {
		return ReasonNotLive
	}
	if sb.TaskARN == "" {
		return ReasonNotRecorded
	}
	if !caller.RunsTask(sb.TaskARN, h.Cluster) {
		return ReasonOtherTask
	}
	return ""
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// decode reads and checks the request's body.
func decode(ev events.LambdaFunctionURLRequest) (Request, error) {
	var r Request
	if err := funcurl.DecodeBody(ev, MaxRequestBytes, &r); err != nil {
		return Request{}, err
	}
	switch {
	case !userid.Valid(r.UserID):
		return Request{}, errors.New("no valid user id")
	case r.Generation < 1:
		return Request{}, errors.New("no generation")
	case r.LeaseToken == "" || len(r.LeaseToken) > 256:
		return Request{}, errors.New("no lease token")
	}
	return r, nil
}

func refuse(status int, code string, retryable bool) events.LambdaFunctionURLResponse {
	b, _ := json.Marshal(Refusal{Error: code, Retryable: retryable})
	return events.LambdaFunctionURLResponse{StatusCode: status, Headers: jsonHeaders(), Body: string(b)}
}

func jsonHeaders() map[string]string {
	return map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}
}

// Log keys of this package; the shared ones come from internal/logging.
const (
	logCaller     = "caller"
	logGeneration = "generation"
	logExpiration = "expiration"
	logStorage    = "storage"
	logMethod     = "method"
	logPath       = "path"
)
