// Command preflight checks an AWS account before `sam deploy`, with read-only calls:
// make preflight [ARGS="-parameter-overrides 'SandboxImage=… SubnetIds=…' -json"].
//
// The stack's parameters are template.yaml's defaults, under samconfig.toml's
// parameter_overrides ([<env>.deploy.parameters], else [<env>.global.parameters]),
// under -parameter-overrides. The account is the operator's usual AWS configuration
// (AWS_PROFILE, environment variables, SSO, …); -profile and -region, else the
// samconfig.toml's profile and region, choose as sam deploy would.
//
// It exits 0 when no check failed, 1 when one did, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/logging"

	"github.com/sandgate/sandgate/infra/preflight"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// DefaultTimeout bounds a whole run.
const DefaultTimeout = 2 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("preflight", flag.ContinueOnError)
	fl.SetOutput(stderr)
	templatePath := fl.String("template", "template.yaml", "the SAM template (its parameters' defaults and constraints, the sandbox task's architecture, reserved concurrency)")
	configFile := fl.String("config-file", "samconfig.toml", "samconfig.toml to read parameter_overrides, region and profile from (ignored when the default is absent)")
	configEnv := fl.String("config-env", preflight.DefaultConfigEnv, "the samconfig.toml environment, as sam deploy --config-env")
	overrides := fl.String("parameter-overrides", "", "`'Name=value …'` over samconfig.toml's, as sam deploy --parameter-overrides takes them")
	region := fl.String("region", "", "AWS region (default: samconfig.toml's, else AWS_REGION or the profile's)")
	profile := fl.String("profile", "", "AWS profile (default: samconfig.toml's, else AWS_PROFILE)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	timeout := fl.Duration("timeout", DefaultTimeout, "give up after this long")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: preflight [flags]   (make preflight ARGS=\"…\")")
		fmt.Fprintln(stderr, "Read-only checks of the AWS account before sam deploy; exits 1 when a check fails.")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "preflight: unexpected argument %q (parameters go in -parameter-overrides 'Name=value …')\n", fl.Arg(0))
		return exitUsage
	}
	explicit := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	params := map[string]string{}
	var sources []string
	sc, err := preflight.ReadSamconfig(*configFile, *configEnv)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit["config-file"]:
		sc = &preflight.Samconfig{}
	case err != nil:
		fmt.Fprintln(stderr, "preflight:", err)
		return exitUsage
	}
	if *overrides != "" {
		flagged, err := preflight.ParseOverrides(*overrides)
		if err != nil {
			fmt.Fprintln(stderr, "preflight: -parameter-overrides:", err)
			return exitUsage
		}
		for k, v := range flagged {
			params[k] = v
		}
		sources = append(sources, "-parameter-overrides")
	}
	if sc.OverridesFrom != "" {
		for k, v := range sc.Overrides {
			if _, set := params[k]; !set {
				params[k] = v
			}
		}
		sources = append(sources, fmt.Sprintf("%s [%s] parameter_overrides", sc.Path, sc.OverridesFrom))
	}
	sources = append(sources, *templatePath+" defaults")
	stack, err := preflight.LoadStack(*templatePath, params)
	if err != nil {
		fmt.Fprintln(stderr, "preflight:", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// The report says what matters; the SDK's own warnings (an IMDSv1 fallback while
	// looking for credentials on a laptop) would only interleave with it.
	opts := []func(*config.LoadOptions) error{config.WithLogger(logging.Nop{})}
	if r := firstOf(*region, sc.Region); r != "" {
		opts = append(opts, config.WithRegion(r))
		stack.Region = r
	}
	if p := firstOf(*profile, sc.Profile); p != "" {
		opts = append(opts, config.WithSharedConfigProfile(p))
	}
	var report *preflight.Report
	cfg, err := awsconf.Load(ctx, opts...)
	if err != nil {
		report = preflight.Unconfigured(stack, err)
	} else {
		stack.Region = cfg.Region
		report = preflight.New(cfg, stack).Run(ctx)
	}
	report.Sources = sources

	write := report.WriteText
	if *asJSON {
		write = report.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintln(stderr, "preflight:", err)
		return exitFailed
	}
	if report.Failed() > 0 {
		return exitFailed
	}
	return exitOK
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
