package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// DefaultMaxAttempts is how often a post is tried while API Gateway answers
// LimitExceededException (the SDK's retryer backs off between attempts).
const DefaultMaxAttempts = 6

// ErrGone means the connection no longer exists; its record has been removed.
var ErrGone = errors.New("connection gone")

// API is the part of the management API client the relay uses.
type API interface {
	PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error)
	DeleteConnection(ctx context.Context, in *apigatewaymanagementapi.DeleteConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.DeleteConnectionOutput, error)
	GetConnection(ctx context.Context, in *apigatewaymanagementapi.GetConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.GetConnectionOutput, error)
}

// Connections is the part of the state store the relay uses.
type Connections interface {
	Connections(ctx context.Context, userID string) ([]state.Connection, error)
	RemoveConnection(ctx context.Context, userID, connectionID string) error
}

// NewClient returns a management API client for endpoint (the WebSocket stage's
// https://<api>.execute-api.<region>.amazonaws.com/<stage>), retrying throttled posts
// DefaultMaxAttempts times.
func NewClient(cfg aws.Config, endpoint string) *apigatewaymanagementapi.Client {
	return apigatewaymanagementapi.NewFromConfig(cfg, func(o *apigatewaymanagementapi.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.Retryer = retry.AddWithMaxAttempts(o.Retryer, DefaultMaxAttempts)
	})
}

// Relay posts frames to connections.
type Relay struct {
	API   API
	Conns Connections
	Log   *slog.Logger
}

// Post sends data to one connection. A gone connection (410) has its record removed
// and returns ErrGone.
func (r *Relay) Post(ctx context.Context, userID, connectionID string, data []byte) error {
	err := r.Send(ctx, connectionID, data)
	if errors.Is(err, ErrGone) {
		if rerr := r.Conns.RemoveConnection(ctx, userID, connectionID); rerr != nil {
			r.Log.WarnContext(ctx, "remove gone connection failed", logging.UserID, userID,
				logging.ConnectionID, connectionID, logging.Error, rerr.Error())
		}
	}
	return err
}

// Send sends data to one connection and leaves the connection records alone: a 410 is
// ErrGone for the caller to judge. API Gateway also answers 410 while a connection is
// still in its $connect, so a caller that knows the connection is new may retry
// instead of forgetting it.
func (r *Relay) Send(ctx context.Context, connectionID string, data []byte) error {
	_, err := r.API.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(connectionID),
		Data:         data,
	})
	var gone *types.GoneException
	if errors.As(err, &gone) {
		return fmt.Errorf("post to %s: %w", connectionID, ErrGone)
	}
	if err != nil {
		return fmt.Errorf("post to %s: %w", connectionID, err)
	}
	return nil
}

// Live asks API Gateway whether connectionID is open (GetConnection), for records
// whose $disconnect may have been lost. A 410 is false with no error; like Send, it
// leaves the records to the caller.
func (r *Relay) Live(ctx context.Context, connectionID string) (bool, error) {
	_, err := r.API.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(connectionID)})
	var gone *types.GoneException
	if errors.As(err, &gone) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get connection %s: %w", connectionID, err)
	}
	return true, nil
}

// Broadcast sends data to every connection of userID, in parallel, and returns how many
// received it. Gone connections are removed and not counted as errors.
func (r *Relay) Broadcast(ctx context.Context, userID string, data []byte) (int, error) {
	conns, err := r.Conns.Connections(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("broadcast: %w", err)
	}
	var (
		mu   sync.Mutex
		sent int
		errs []error
		wg   sync.WaitGroup
	)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.Post(ctx, userID, c.ConnectionID, data)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				sent++
			case !errors.Is(err, ErrGone):
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	return sent, errors.Join(errs...)
}

// Close closes a connection from the server side; closing a gone one is not an error.
func (r *Relay) Close(ctx context.Context, connectionID string) error {
	_, err := r.API.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(connectionID)})
	var gone *types.GoneException
	if err != nil && !errors.As(err, &gone) {
		return fmt.Errorf("close %s: %w", connectionID, err)
	}
	return nil
}
