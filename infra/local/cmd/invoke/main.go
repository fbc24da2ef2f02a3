// Command invoke runs one function of template.yaml once with an event, the local
// equivalent of `sam local invoke`: make invoke FN=AuthorizeFunction EVENT=events/authorize.json.
//
// It builds nothing (make build-local does), starts the function's bootstrap under the
// local Lambda runtime with the template's environment (local defaults for what only
// a deployed stack knows), prints the response to stdout and exits 1 on a function error.
//
// With -env-vars (the file `make dev` writes for `sam local invoke --env-vars`) the
// function runs against the running local stack as SAM CLI would run it: the file's
// values for the variables the template declares, and the caller's AWS credentials
// from the environment (source .sandgate/aws.env).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// pairs is a repeatable KEY=VALUE flag.
type pairs map[string]string

func (p pairs) String() string { return "" }
func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	p[k] = v
	return nil
}

// run returns the exit code: 0 success, 1 function error, 2 bad usage or setup.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("invoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tplPath := fs.String("template", "template.yaml", "SAM template")
	fn := fs.String("fn", "", "logical id of the function, such as AuthorizeFunction")
	eventPath := fs.String("event", "", "JSON event file")
	build := fs.String("build", "build/local", "directory holding <name>/bootstrap (make build-local)")
	env, params := pairs{}, pairs{}
	fs.Var(env, "env", "KEY=VALUE added to the function's environment (repeatable; wins over the template)")
	fs.Var(params, "param", "Name=Value template parameter override (repeatable)")
	envVars := fs.String("env-vars", "", "a SAM CLI env-vars file (make dev writes .sandgate/"+samEnvFile+"): run against the local stack with the caller's AWS credentials")
	fresh := fs.Bool("fresh-signature", true, "sign the event's connection query anew (a fresh exp and sig under the local development secret), so an old sample event is not refused as expired")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "invoke:", err)
		return 2
	}
	if *fn == "" || *eventPath == "" {
		return fail(errors.New("-fn and -event are required, for example: -fn AuthorizeFunction -event events/authorize.json"))
	}
	event, err := os.ReadFile(*eventPath)
	if err != nil {
		return fail(fmt.Errorf("read event: %w", err))
	}
	if !json.Valid(event) {
		return fail(fmt.Errorf("event %s is not valid JSON", *eventPath))
	}
	if *fresh {
		var who string
		if event, who, err = resign(event, local.DevSecret, time.Now()); err != nil {
			return fail(err)
		}
		if who != "" {
			fmt.Fprintf(stderr, "invoke: signed %s's query anew with the local development secret (-fresh-signature=false keeps the event's own)\n", who)
		}
	}
	tpl, err := template.Load(*tplPath, template.Options{Parameters: stack.LocalParams(params), Resolver: LocalResolver(), Functions: []string{*fn}})
	if err != nil {
		return fail(err)
	}
	f := tpl.Functions[*fn]
	vars := map[string]string{}
	for k, v := range f.Environment {
		vars[k] = v
	}
	// Without a stack the function has nothing to call: credentials that sign, for a
	// function that calls nothing.
	base := map[string]string{"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
	if *envVars != "" {
		ignored, err := applyEnvVars(*envVars, f.LogicalID, vars)
		if err != nil {
			return fail(err)
		}
		for _, k := range ignored {
			fmt.Fprintf(stderr, "invoke: %s is not declared on %s in the template; SAM CLI would ignore it too\n", k, f.LogicalID)
		}
		if base, err = callerCredentials(os.Getenv); err != nil {
			return fail(err)
		}
		if err := reachable(vars["AWS_ENDPOINT_URL"]); err != nil {
			return fail(err)
		}
	}
	for k, v := range env {
		vars[k] = v
	}
	log := logging.New(stderr, slog.LevelWarn)
	rt := lambdart.New(log, stderr)
	rt.Env = base
	defer rt.Close()
	// Functions read their secrets from Secrets Manager at start-up. Without the local
	// stack, a Secrets Manager of this run holds the development signing secret under
	// the name the template gives the function.
	if id := f.Environment[authorizer.EnvSigningSecretID]; id != "" && vars["AWS_ENDPOINT_URL"] == "" {
		sm, err := secretslocal.StartDev(map[string]string{id: local.DevSecret})
		if err != nil {
			return fail(err)
		}
		defer sm.Close()
		for k, v := range sm.Env {
			rt.Env[k] = v
		}
		// A verified URL is checked against its user's revocation in the table: a
		// DynamoDB of this run (DynamoDB Local) holds the template's table, empty, so
		// no user is revoked.
		ddb, err := dynamodblocal.Start(context.Background(), dynamodblocal.Options{})
		if err != nil {
			return fail(err)
		}
		defer ddb.Stop()
		client, err := ddb.Client(context.Background())
		if err != nil {
			return fail(err)
		}
		if err := state.CreateTable(context.Background(), client, vars[authorizer.EnvTable]); err != nil {
			return fail(err)
		}
		rt.Env["AWS_ENDPOINT_URL_DYNAMODB"] = ddb.Endpoint()
	}
	if err := rt.Add(lambdart.Function{
		Name: f.LogicalID, Path: filepath.Join(*build, f.Name, "bootstrap"), Handler: f.Handler,
		Timeout: f.Timeout, MemoryMB: f.MemorySize, LogFormat: f.LogFormat, LogLevel: f.LogLevel,
		Env: vars, MaxConcurrency: 1,
	}); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := rt.Invoke(ctx, f.LogicalID, event)
	var fe *lambdart.FunctionError
	switch {
	case errors.As(err, &fe):
		fmt.Fprintln(stdout, string(fe.Payload))
		fmt.Fprintln(stderr, "invoke:", fe.Error())
		return 1
	case err != nil:
		return fail(err)
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

// LocalResolver answers what only a deployed stack knows with the local stack's
// values: pseudo parameters, resource names (the logical id), ARNs, and the signing
// secret (the public development secret).
func LocalResolver() template.Resolver { return localResolver{} }

type localResolver struct{}

func (localResolver) Ref(id string) (string, error) {
	switch id {
	case "AWS::Region":
		return lambdart.DefaultRegion, nil
	case "AWS::AccountId":
		return lambdart.DefaultAccountID, nil
	case "AWS::StackName":
		return "sandgate-local", nil
	case "AWS::Partition":
		return "aws", nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	}
	if strings.HasPrefix(id, "AWS::") {
		return "", fmt.Errorf("%w: pseudo parameter %s", template.ErrUnresolved, id)
	}
	return id, nil
}

func (localResolver) GetAtt(id, attr string) (string, error) {
	if attr == "Arn" {
		return "arn:aws:local:" + lambdart.DefaultRegion + ":" + lambdart.DefaultAccountID + ":" + id, nil
	}
	return id + "." + attr, nil
}

func (localResolver) Dynamic(ref string) (string, error) {
	if strings.HasPrefix(ref, "resolve:secretsmanager:") && strings.Contains(ref, "signing-secrets") {
		return local.DevSecret, nil
	}
	return "", fmt.Errorf("%w: {{%s}} has no local value", template.ErrUnresolved, ref)
}
