// Command sandgate-agent is the sandbox's entrypoint: the agent (no arguments), the
// built-in demo workload (demo), and the container's health check (healthcheck). It
// is also the workload's launcher: the agent re-executes it to start the workload
// (internal/workload.RunLauncher).
//
// The agent is the container's PID 1 (the task definition has no init process): a
// child subreaper that reaps the orphans the workload leaves, with SIGTERM and SIGINT
// starting its stop sequence.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/demoworkload"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
	"github.com/sandgate/sandgate/internal/workload"
)

const usage = "usage: sandgate-agent [demo | healthcheck]"

// Log keys of the reaper's lines, and a pool task's.
const (
	logPID    = "pid"
	logStatus = "waitStatus"
	logPoolID = "poolId"
)

func main() {
	workload.RunLauncher() // returns unless the agent started this process as a launcher
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandgate-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env := config.New(os.LookupEnv)
	switch {
	case len(args) == 0:
		return runAgent(ctx, env, stdout, stderr)
	case args[0] == "demo" && len(args) == 1:
		return runDemo(ctx, env, stderr)
	case args[0] == "healthcheck" && len(args) == 1:
		return runHealthcheck(ctx, env)
	}
	return errors.New(usage)
}

// runAgent reads the configuration once, builds the clients and runs the sandbox.
func runAgent(ctx context.Context, env *config.Env, stdout, stderr io.Writer) error {
	// First, before the configuration (and its secrets) is read: our /proc files then
	// belong to root and no process may ptrace us without CAP_SYS_PTRACE, even one of
	// our own uid (the workload, when a local stack that is not root runs it so).
	if err := agent.ProtectProcess(); err != nil {
		return fmt.Errorf("protect the agent from the workload: %w", err)
	}
	cfg := agent.LoadConfig(env)
	services := agent.LoadServices(env)
	log := logging.New(stdout, cfg.LogLevel)
	if cfg.UserID != "" {
		log = log.With(logging.UserID, cfg.UserID)
	}
	if err := env.Err(); err != nil {
		log.Error("bad configuration", logging.Error, err.Error())
		return err
	}
	// The task role (the container credentials) signs one thing: the requests to the
	// credential vendor. Every other client signs with the scoped credentials it hands
	// out, which reach only this user's items, objects and (through the relay) its
	// connections.
	taskRole, err := awsconf.Load(ctx)
	if err != nil {
		log.Error("aws configuration", logging.Error, err.Error())
		return err
	}
	vendor, err := vend.NewClient(services.VendURL, taskRole.Credentials, taskRole.Region, nil)
	if err != nil {
		log.Error("credential vendor", logging.Error, err.Error())
		return err
	}
	if cfg.PoolID != "" {
		// A warm pool task: no user, no user's credentials, nothing restored, until a
		// claim names the user; then the sandbox starts as a launched one does, and
		// the vendor decides whether the claim is true.
		log = log.With(logPoolID, cfg.PoolID)
		claim, err := (&agent.PoolWait{Config: cfg, Vendor: vendor, Log: log}).Wait(ctx)
		if errors.Is(err, agent.ErrNotClaimed) {
			return nil
		}
		if err != nil {
			log.Error("pool task exits unclaimed", logging.Error, err.Error())
			return err
		}
		if cfg, err = cfg.Claimed(claim); err != nil {
			log.Error("bad claim", logging.Error, err.Error())
			return err
		}
		log = log.With(logging.UserID, cfg.UserID)
	}
	creds := agent.NewCredentials(vendor, vend.Request{UserID: cfg.UserID, Generation: cfg.Generation, LeaseToken: cfg.LeaseToken}, log)
	scoped := taskRole.Copy()
	scoped.Credentials = creds
	storage := scoped.Copy()
	storage.Credentials = creds.Storage()
	store := state.New(dynamodb.NewFromConfig(scoped), cfg.Table)
	store.LeaseTTL = cfg.LeaseTTL
	store.Logger = log
	bucket := s3bucket.New(s3bucket.NewClient(storage, cfg.Storage), cfg.Bucket)
	replies, err := connrelay.NewClient(services.RelayURL, cfg.UserID, creds, scoped.Region, nil)
	if err != nil {
		log.Error("relay", logging.Error, err.Error())
		return err
	}
	a := agent.New(cfg, store, bucket, replies, log)
	a.Credentials = creds
	// The user's spend on the upstreams outlives the sandbox: a restart does not reset it.
	a.SpendLedger = state.SpendLedger{Store: store, UserID: cfg.UserID}
	a.WorkloadOutput = stderr
	// This binary, reached through the magic link from the launcher (which is this
	// binary too), so the workload's uid needs no access to where it is installed.
	a.WorkloadCommand = []string{"/proc/self/exe", "demo"}
	// The only waiter of this process: every child is started through it.
	reaper, err := workload.StartReaper(func(pid int, status syscall.WaitStatus) {
		log.Debug("reaped an orphan of the workload", logPID, pid, logStatus, int(status))
	})
	if err != nil {
		log.Error("become the container's init", logging.Error, err.Error())
		return err
	}
	defer reaper.Close()
	a.Reaper = reaper
	if err := a.Run(ctx); err != nil {
		log.Error("agent exited", logging.Error, err.Error())
		return err
	}
	return nil
}

// runDemo serves the built-in demo workload where the agent told it to.
func runDemo(ctx context.Context, env *config.Env, stderr io.Writer) error {
	host := env.String(workload.EnvHost, "127.0.0.1")
	port := env.Int(workload.EnvPort, 0, 1, 65535)
	dir := env.Required(workload.EnvWorkspace)
	if port == 0 {
		env.Check(workload.EnvPort, errors.New("required"))
	}
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(stderr, slog.LevelInfo).With("component", "demo")
	ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return (&demoworkload.Server{Dir: dir, Log: log}).Serve(ctx, ln)
}

// runHealthcheck asks the agent's /healthz, found the way the agent finds itself.
func runHealthcheck(ctx context.Context, env *config.Env) error {
	cfg := agent.LoadHealthConfig(env)
	if err := env.Err(); err != nil {
		return err
	}
	return agent.Healthcheck(ctx, &http.Client{Timeout: agent.DefaultHealthTimeout}, cfg)
}
