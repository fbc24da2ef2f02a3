package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/vend"
)

// DefaultRegisterWait is how long a pool task keeps asking the vendor to register it
// while the vendor cannot be reached.
const DefaultRegisterWait = 2 * time.Minute

// Errors of a pool task's wait.
var (
	// ErrNotClaimed: the wait ended (SIGTERM: the task was drained or the stack is
	// stopping) before any claim came. Nothing was read or written: a clean exit.
	ErrNotClaimed = errors.New("pool task stopped before it was claimed")
	// ErrRegistrationRefused: the vendor will not register this task (not a pool
	// task, or one claimed or drained already): it exits without serving anyone.
	ErrRegistrationRefused = errors.New("pool registration refused")
)

// Registrar registers a pool task with the credential vendor; *vend.Client is one.
type Registrar interface {
	Register(ctx context.Context, claimSecret string) (string, error)
}

var _ Registrar = (*vend.Client)(nil)

// PoolWait is a warm pool task before its claim: the agent with no user, no user's
// credentials, nothing restored and no workload, waiting to be told whom it serves.
type PoolWait struct {
	Config     Config
	Vendor     Registrar
	HTTPClient *http.Client
	Log        *slog.Logger
	// RegisterWait is DefaultRegisterWait when zero.
	RegisterWait time.Duration
	// Registered, when set, is called once the task is registered, with its pool id.
	Registered func(poolID string)
}

// Wait registers the task and waits for its one claim. It learns the task's address,
// makes a claim secret, serves the health check and the claim on the agent's port,
// registers through the vendor (which records the task's endpoint and the secret in
// its pool item: only a claimer that read the item can claim it), and returns the
// first claim that shows the secret, once its answer is sent and the port is free
// again for the sandbox's own API. ErrNotClaimed when ctx ends first;
// ErrRegistrationRefused when the vendor refuses.
//
// A claim is believed by no one yet: the sandbox that Run starts with it asks the
// vendor for the claimed user's credentials, which the vendor hands over only when the
// user's record names this task with that lease.
func (p *PoolWait) Wait(ctx context.Context) (agentapi.Claim, error) {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := p.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	addr, err := Address(ctx, hc, p.Config.MetadataURI, 0)
	if err != nil {
		return agentapi.Claim{}, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(p.Config.Port)))
	if err != nil {
		return agentapi.Claim{}, fmt.Errorf("listen: %w", err)
	}
	secret := newGatewayToken()
	claims := make(chan agentapi.Claim, 1)
	srv := &http.Server{
		Handler:           agentapi.NewClaimServer(secret, func(c agentapi.Claim) { claims <- c }),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("claim server failed", logging.Error, err.Error())
		}
	}()
	// The port must be free again before the sandbox listens on it; the claim's own
	// answer goes out first (Shutdown waits for it).
	closeServer := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-served
	}

	poolID, err := p.register(ctx, log, secret)
	if err != nil {
		closeServer()
		return agentapi.Claim{}, err
	}
	if p.Registered != nil {
		p.Registered(poolID)
	}
	log.Info("pool task waiting for a claim", logPoolID, poolID, logEndpoint, Endpoint(addr, p.Config.Port))
	select {
	case c := <-claims:
		closeServer()
		log.Info("pool task claimed", logging.UserID, c.UserID, logGeneration, c.Generation)
		return c, nil
	case <-ctx.Done():
		closeServer()
		log.Info("pool task stopped before a claim")
		return agentapi.Claim{}, ErrNotClaimed
	}
}

// register asks the vendor to register the task, again with backoff while the vendor
// cannot be reached, for RegisterWait.
func (p *PoolWait) register(ctx context.Context, log *slog.Logger, secret string) (string, error) {
	deadline := time.Now().Add(orDefault(p.RegisterWait, DefaultRegisterWait))
	delay := 200 * time.Millisecond
	for {
		id, err := p.Vendor.Register(ctx, secret)
		switch {
		case err == nil:
			return id, nil
		case errors.Is(err, vend.ErrRefused):
			log.Error("pool registration refused; exiting", logging.Error, err.Error())
			return "", fmt.Errorf("%w: %w", ErrRegistrationRefused, err)
		case time.Now().Add(delay).After(deadline):
			return "", fmt.Errorf("pool registration: %w", err)
		}
		log.Warn("pool registration failed; asking again", logging.Error, err.Error())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ErrNotClaimed
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// logPoolID is the log key of a pool task's id.
const logPoolID = "poolId"
