package vend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// PathPoolRegister is where a warm pool task registers.
const PathPoolRegister = "/pool/register"

// Claim secrets' bounds: what the agent makes is 43 characters (32 random bytes).
const (
	MinClaimSecret = 32
	MaxClaimSecret = 256
)

// PoolRegistration is what a pool task sends: the claim secret its agent made. Nothing
// else is taken from the task: its pool id, task definition, launch time and address
// come from ECS, so a task can register only what it is.
type PoolRegistration struct {
	ClaimSecret string `json:"claimSecret"`
}

// LogValue leaves the secret out of logs.
func (PoolRegistration) LogValue() slog.Value { return slog.StringValue("pool registration") }

// PoolRegistered is the answer to a registration.
type PoolRegistered struct {
	PoolID string `json:"poolId"`
}

// Pool is the state a registration writes; *state.Store is one.
type Pool interface {
	RegisterPool(ctx context.Context, r state.PoolRegistration) (state.PoolTask, error)
}

// ECS is the part of the ECS client a registration uses.
type ECS interface {
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, optFns ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

var (
	_ Pool = (*state.Store)(nil)
	_ ECS  = (*ecs.Client)(nil)
)

// Reasons a registration is refused, for the vendor's log.
const (
	ReasonNotPoolTask = "not_pool_task"    // no pool id in its overrides, or a user's task
	ReasonTaskGone    = "task_not_running" // ECS does not run it (or no longer)
	ReasonNotLaunched = "not_launching"    // its pool item is not waiting for it
)

// register answers a pool task's registration: the caller must be a session of the
// task role named after a task ECS runs in the cluster, started by the launcher as a
// pool task (a pool id and no user in its overrides); the vendor then records its
// pool item WAITING with the task's private address and the agent's port as its
// endpoint, the task definition and launch time ECS reports, and the claim secret.
// A task registers once: a task that was claimed, drained or registered with another
// secret is refused.
func (h *Handler) register(ctx context.Context, log *slog.Logger, caller funcurl.Caller, ev events.LambdaFunctionURLRequest) events.LambdaFunctionURLResponse {
	if h.ECS == nil || h.Pool == nil {
		log.WarnContext(ctx, "registration refused", logging.Reason, "no pool configured")
		return refuse(http.StatusNotFound, CodeBadRequest, false)
	}
	req, err := decodeRegistration(ev)
	if err != nil {
		log.WarnContext(ctx, "registration refused", logging.Reason, ReasonBadRequest, logging.Error, err.Error())
		return refuse(http.StatusBadRequest, CodeBadRequest, false)
	}
	out, err := h.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(h.Cluster), Tasks: []string{caller.Session}})
	if err != nil {
		log.ErrorContext(ctx, "registration unavailable", logging.Error, err.Error())
		return refuse(http.StatusServiceUnavailable, CodeUnavailable, true)
	}
	reg, reason := h.describe(caller, out.Tasks)
	if reason != "" {
		log.WarnContext(ctx, "registration refused", logging.Reason, reason)
		return refuse(http.StatusForbidden, CodeRefused, false)
	}
	reg.ClaimSecret = req.ClaimSecret
	log = log.With(logPoolID, reg.ID, logging.TaskARN, reg.TaskARN)
	p, err := h.Pool.RegisterPool(ctx, reg)
	switch {
	case errors.Is(err, state.ErrNotFound), errors.Is(err, state.ErrState):
		log.WarnContext(ctx, "registration refused", logging.Reason, ReasonNotLaunched, logging.Error, err.Error())
		return refuse(http.StatusForbidden, CodeRefused, false)
	case err != nil:
		log.ErrorContext(ctx, "registration unavailable", logging.Error, err.Error())
		return refuse(http.StatusServiceUnavailable, CodeUnavailable, true)
	}
	log.InfoContext(ctx, "pool task registered", logEndpoint, p.Endpoint, logTaskDef, p.TaskDefinition)
	b, _ := json.Marshal(PoolRegistered{PoolID: p.ID})
	return events.LambdaFunctionURLResponse{StatusCode: http.StatusOK, Headers: jsonHeaders(), Body: string(b)}
}

// describe checks the task ECS described for the caller and returns what it
// registers, or the reason it is refused.
func (h *Handler) describe(caller funcurl.Caller, tasks []ecstypes.Task) (state.PoolRegistration, string) {
	if len(tasks) != 1 || !caller.RunsTask(aws.ToString(tasks[0].TaskArn), h.Cluster) {
		return state.PoolRegistration{}, ReasonTaskGone
	}
	t := tasks[0]
	if aws.ToString(t.DesiredStatus) != "RUNNING" || aws.ToString(t.LastStatus) == "STOPPED" || aws.ToString(t.StartedBy) != h.startedBy() {
		return state.PoolRegistration{}, ReasonTaskGone
	}
	var poolID, user string
	if t.Overrides != nil {
		for _, o := range t.Overrides.ContainerOverrides {
			for _, kv := range o.Environment {
				switch aws.ToString(kv.Name) {
				case taskenv.PoolID:
					poolID = aws.ToString(kv.Value)
				case taskenv.UserID:
					user = aws.ToString(kv.Value)
				}
			}
		}
	}
	if poolID == "" || user != "" {
		return state.PoolRegistration{}, ReasonNotPoolTask
	}
	ip := privateIP(t)
	if ip == "" || t.CreatedAt == nil {
		return state.PoolRegistration{}, ReasonTaskGone
	}
	port := h.AgentPort
	if port == 0 {
		port = DefaultAgentPort
	}
	return state.PoolRegistration{
		ID: poolID, TaskARN: aws.ToString(t.TaskArn), TaskDefinition: aws.ToString(t.TaskDefinitionArn),
		Endpoint:   "http://" + net.JoinHostPort(ip, strconv.Itoa(port)),
		LaunchedAt: aws.ToTime(t.CreatedAt),
	}, ""
}

// privateIP is the task's awsvpc address.
func privateIP(t ecstypes.Task) string {
	for _, a := range t.Attachments {
		for _, d := range a.Details {
			if aws.ToString(d.Name) == "privateIPv4Address" {
				return aws.ToString(d.Value)
			}
		}
	}
	return ""
}

func (h *Handler) startedBy() string {
	if h.StartedBy == "" {
		return DefaultStartedBy
	}
	return h.StartedBy
}

// Defaults of the registration.
const (
	// DefaultAgentPort is the agent's port (the task definition's AGENT_PORT).
	DefaultAgentPort = 8080
	// DefaultStartedBy marks the launcher's tasks (launcher.DefaultStartedBy).
	DefaultStartedBy = "sandgate"
)

func decodeRegistration(ev events.LambdaFunctionURLRequest) (PoolRegistration, error) {
	var r PoolRegistration
	if err := funcurl.DecodeBody(ev, MaxRequestBytes, &r); err != nil {
		return PoolRegistration{}, err
	}
	if n := len(r.ClaimSecret); n < MinClaimSecret || n > MaxClaimSecret {
		return PoolRegistration{}, fmt.Errorf("claim secret of %d bytes", n)
	}
	return r, nil
}

// Register registers the calling pool task with claimSecret, and returns its pool id.
// ErrRefused: the vendor will not register it (not a pool task, or not one waiting to
// register); any other error is transient.
func (c *Client) Register(ctx context.Context, claimSecret string) (string, error) {
	body, err := json.Marshal(PoolRegistration{ClaimSecret: claimSecret})
	if err != nil {
		return "", err
	}
	resp, err := c.fu.Post(ctx, PathPoolRegister, body)
	if err != nil {
		return "", fmt.Errorf("register with the credential vendor: %w", err)
	}
	if resp.Status == http.StatusOK {
		var r PoolRegistered
		if err := json.Unmarshal(resp.Body, &r); err != nil || r.PoolID == "" {
			return "", fmt.Errorf("credential vendor's answer to a registration: %q", firstLine(resp.Body))
		}
		return r.PoolID, nil
	}
	var ref Refusal
	_ = json.Unmarshal(resp.Body, &ref)
	if resp.Status == http.StatusForbidden && ref.Error == CodeRefused {
		return "", ErrRefused
	}
	return "", fmt.Errorf("credential vendor answered %d %s", resp.Status, firstLine(resp.Body))
}

// Log keys of the registration.
const (
	logPoolID   = "poolId"
	logEndpoint = "endpoint"
	logTaskDef  = "taskDefinition"
)
