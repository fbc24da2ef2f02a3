// Command dev runs the whole application on this machine (`make dev`): the local stack
// from template.yaml, the demo page, and the scheduled cleanup, until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	root := fs.String("root", ".sandgate", "directory holding DynamoDB and S3 data and the task directories")
	reset := fs.Bool("reset", false, "delete the data under -root before starting")
	addr := fs.String("addr", stack.DefaultAddr, "address of the gateway, the demo page and the management API")
	httpAddr := fs.String("http-addr", stack.DefaultHTTPAddr, "address of the HTTP API (status, prewarm)")
	tpl := fs.String("template", "template.yaml", "SAM template")
	build := fs.String("build", "build/local", "directory of the native bootstraps and the agent (make build-local)")
	delay := fs.Duration("launch-delay", 3*time.Second, "emulated time from RunTask to the task starting (Fargate takes 30-90 s)")
	quiet := fs.Bool("quiet", false, "do not print the functions' and tasks' output")
	noIAM := fs.Bool("no-iam", false, "debugging only: allow every signed call instead of enforcing template.yaml's policies")
	poolSize := fs.Int("pool-size", 0, "warm pool tasks kept waiting for a user (the template's PoolSize): with -launch-delay=30s, a start that claims one is ready in about a second")
	r2 := fs.Bool("r2", false, "serve the bucket as Cloudflare R2 and deploy the template for R2 (parent key in Secrets Manager, vended temporary credentials)")
	workloadName := fs.String("workload", workloadDemo, "every sandbox's workload: demo (the built-in Go demo) or node (container/node-gateway, with a stub model API unless -model-url)")
	workloadCommand := fs.String("workload-command", "", "every sandbox's SANDBOX_COMMAND instead (files readable by every user: each workload runs under a uid of its own)")
	modelURL := fs.String("model-url", "", "a model API for the agent's proxy (ModelApiUrl); its key is read from "+EnvModelKey)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *reset {
		if err := os.RemoveAll(*root); err != nil {
			return fmt.Errorf("reset %s: %w", *root, err)
		}
		fmt.Fprintf(stdout, "reset: removed %s\n", *root)
	}
	agent, err := filepath.Abs(filepath.Join(*build, "agent"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(agent); err != nil {
		return fmt.Errorf("no agent at %s: run make build-local", agent)
	}
	output := io.Writer(stderr)
	if *quiet {
		output = io.Discard
	}
	log := logging.New(stderr, slog.LevelWarn)
	repo, err := filepath.Abs(filepath.Dir(*tpl))
	if err != nil {
		return err
	}
	wl, err := setupWorkload(*workloadName, *workloadCommand, *modelURL, repo)
	if err != nil {
		return err
	}
	defer wl.close()
	var overrides map[string]string
	if wl.command != "" {
		overrides = map[string]string{"SANDBOX_COMMAND": wl.command}
	}
	fmt.Fprintln(stdout, "starting the local stack (DynamoDB Local takes a few seconds)…")
	s, err := stack.Start(ctx, stack.Options{
		Root: *root, Persist: true, Template: *tpl, BuildDir: *build, Agent: agent,
		Functions: true, Schedules: true, Addr: *addr, HTTPAddr: *httpAddr, LaunchDelay: *delay, Log: log, Output: output,
		NoIAM: *noIAM, R2: *r2, Params: map[string]string{"PoolSize": strconv.Itoa(*poolSize)},
		ModelAPI: wl.model, Overrides: overrides,
	})
	if err != nil {
		return err
	}
	pool := "off (-pool-size=N keeps N tasks waiting)"
	if *poolSize > 0 {
		// Filled now rather than at the schedule's first minute.
		if err := s.RunSchedule(ctx, "PoolFunction"); err != nil {
			return err
		}
		pool = fmt.Sprintf("%d tasks, filling now (after the launch delay), refilled every minute and after each claim", *poolSize)
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping: every sandbox gets SIGTERM and syncs before the stack goes down…")
		closeCtx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
		defer cancel()
		if err := s.Close(closeCtx); err != nil {
			fmt.Fprintln(stderr, "dev: stop:", err)
		}
		fmt.Fprintln(stdout, "stopped.")
	}()

	if err := s.ServeDemoPage(log); err != nil {
		return err
	}

	url, err := s.SignURL("user_alice")
	if err != nil {
		return err
	}
	awsEnv := filepath.Join(s.Root, stack.AWSEnvFile)
	if err := s.WriteAWSEnv(awsEnv); err != nil {
		return err
	}
	samEnv := filepath.Join(s.Root, stack.SAMEnvFile)
	if err := s.WriteSAMEnv(samEnv); err != nil {
		return err
	}
	// Its endpoints die with this run: a later make invoke must not send calls there.
	defer os.Remove(samEnv)
	storage := "S3"
	if s.R2 != nil {
		storage = "R2 (" + s.R2.Endpoint + ", served at " + s.S3.URL() + "; the aws function signs s3 with the parent key)"
	}
	fmt.Fprintf(stdout, `
sandgate is running locally.

  storage          %s
  warm pool        %s
  workload         %s
  model API        %s

  demo page        %s/
  WebSocket stage  %s
  HTTP API         %s  (GET /status, POST /prewarm, same signed query)
  management API   %s
  data             %s  (DynamoDB, S3 and task directories; make dev-reset clears it)
  AWS CLI / SDKs   source %s   (endpoints and an operator's credentials)
                   then: aws dynamodb scan --table-name "$SANDGATE_TABLE"
  one function     make invoke FN=ConnectFunction EVENT=events/connect.json
                   or with SAM CLI, after sourcing the AWS env file above:
                   sam local invoke ConnectFunction -e events/connect.json \
                     --env-vars %s --docker-network host

  try it:  npx wscat -c '%s'
           then send: %s

Ctrl-C stops everything (each sandbox syncs first).
`, storage, pool, wl.shown, wl.modelShown, s.Gateway.BaseURL(), s.Gateway.WebSocketURL(), s.Gateway.HTTPURL(), s.Gateway.ManagementEndpoint(), s.Root, awsEnvShown(awsEnv), awsEnvShown(samEnv), url, wl.try)
	<-ctx.Done()
	return nil
}

// awsEnvShown is path relative to the working directory when it lies below it.
func awsEnvShown(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
