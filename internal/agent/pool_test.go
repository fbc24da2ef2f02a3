package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/vend"
)

// registrar stands in for the vendor's registration: it records the secret, or
// answers with err.
type registrar struct {
	mu      sync.Mutex
	secrets []string
	err     error
}

func (r *registrar) Register(_ context.Context, secret string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", r.err
	}
	r.secrets = append(r.secrets, secret)
	return "pool1", nil
}

func (r *registrar) secret() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.secrets) == 0 {
		return ""
	}
	return r.secrets[len(r.secrets)-1]
}

// poolWait is a waiting pool task on loopback.
func poolWait(t *testing.T, reg *registrar) (*agent.PoolWait, string, chan string) {
	t.Helper()
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["127.0.0.1"]}]}`)
	}))
	t.Cleanup(meta.Close)
	port := freePort(t)
	registered := make(chan string, 1)
	logs := &testkit.Logs{}
	return &agent.PoolWait{
		Config: agent.Config{PoolID: "pool1", MetadataURI: meta.URL, Port: port},
		Vendor: reg, Log: logs.Logger(), Registered: func(id string) { registered <- id },
	}, "http://127.0.0.1:" + strconv.Itoa(port), registered
}

// A waiting pool task registers a secret of its own, refuses a claim without it, takes
// the first claim that shows it, and frees its port for the sandbox.
func TestPoolWait_TakesOneClaimWithItsSecret(t *testing.T) {
	reg := &registrar{}
	w, endpoint, registered := poolWait(t, reg)
	type result struct {
		c   agentapi.Claim
		err error
	}
	done := make(chan result, 1)
	go func() { c, err := w.Wait(context.Background()); done <- result{c, err} }()
	<-registered
	secret := reg.secret()
	if len(secret) < vend.MinClaimSecret {
		t.Fatalf("claim secret of %d characters", len(secret))
	}
	var api agentapi.Client
	claim := agentapi.Claim{UserID: "user_alice", Generation: 4, LeaseToken: "tok"}
	if err := api.Claim(context.Background(), endpoint, "not-the-secret-at-all-0000000000000", claim); !errors.Is(err, agentapi.ErrClaimRefused) {
		t.Fatalf("claim without the secret: %v", err)
	}
	if err := api.Claim(context.Background(), endpoint, secret, claim); err != nil {
		t.Fatalf("claim: %v", err)
	}
	r := <-done
	if r.err != nil || r.c != claim {
		t.Fatalf("wait = %+v, %v", r.c, r.err)
	}
	// The sandbox listens where the pool task did.
	ln, err := net.Listen("tcp", endpoint[len("http://"):])
	if err != nil {
		t.Fatalf("the port is still held: %v", err)
	}
	ln.Close()
	cfg, err := w.Config.Claimed(r.c)
	if err != nil || cfg.UserID != "user_alice" || cfg.Generation != 4 || cfg.LeaseToken != "tok" || cfg.Prefix != "users/user_alice/" {
		t.Fatalf("claimed configuration %+v, %v", cfg, err)
	}
}

// A registration the vendor refuses ends the task; a stop before any claim is a clean
// exit with nothing claimed.
func TestPoolWait_RefusedOrStopped(t *testing.T) {
	w, _, _ := poolWait(t, &registrar{err: vend.ErrRefused})
	if _, err := w.Wait(context.Background()); !errors.Is(err, agent.ErrRegistrationRefused) {
		t.Fatalf("refused registration: %v", err)
	}
	w, _, registered := poolWait(t, &registrar{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := w.Wait(ctx); done <- err }()
	<-registered
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrNotClaimed) {
			t.Fatalf("stopped: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end with its context")
	}
}

// A pool task's configuration names no user; one that does is refused, and a claim
// cannot make a user's task serve another.
func TestLoadConfig_PoolTask(t *testing.T) {
	vars := taskVars()
	for _, k := range []string{taskenv.UserID, taskenv.LeaseToken, taskenv.Generation, taskenv.Prefix} {
		delete(vars, k)
	}
	vars[taskenv.PoolID] = "pool1"
	env := config.New(config.Map(vars))
	cfg := agent.LoadConfig(env)
	if err := env.Err(); err != nil || cfg.PoolID != "pool1" || cfg.UserID != "" {
		t.Fatalf("pool configuration %+v, %v", cfg, err)
	}
	vars[taskenv.UserID] = "user_abc"
	env = config.New(config.Map(vars))
	agent.LoadConfig(env)
	if err := env.Err(); err == nil {
		t.Fatal("a pool task naming a user was accepted")
	}
	env = config.New(config.Map(taskVars()))
	user := agent.LoadConfig(env)
	if _, err := user.Claimed(agentapi.Claim{UserID: "user_b", Generation: 1, LeaseToken: "t"}); err == nil {
		t.Fatal("a user's task took a claim")
	}
	if _, err := cfg.Claimed(agentapi.Claim{UserID: "../x", Generation: 1, LeaseToken: "t"}); err == nil {
		t.Fatal("a claim for a bad user id was taken")
	}
}
