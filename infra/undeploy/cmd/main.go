// Command undeploy deletes a deployed stack without losing its users' data:
// make undeploy [ARGS="-stack-name sandgate -yes"].
//
// It refuses new sandboxes (the start functions' reserved concurrency goes to 0), stops
// every sandbox task of the stack's cluster and waits until ECS reports each STOPPED
// (each agent syncs its user's files on SIGTERM), then runs `sam delete` — or prints
// it, with -print-delete or where SAM CLI is not installed. If the sandboxes do not
// all stop in time, nothing is deleted and new sandboxes are allowed again.
//
// The stack name, region and profile come from the flags, else from samconfig.toml
// (as sam deploy wrote them), else the stack is "sandgate" and the region and profile
// the operator's usual AWS configuration. The cluster and start functions are looked
// up with cloudformation:DescribeStackResource, unless -cluster (and -start-functions)
// name them.
//
// It exits 0 when the stack was deleted (or the deletion printed), 1 when it was not,
// 2 on a usage error.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/infra/stackref"
	"github.com/sandgate/sandgate/infra/undeploy"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("undeploy", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var target stackref.Flags
	target.Register(fl)
	cluster := fl.String("cluster", "", "the sandboxes' cluster, for a stack CloudFormation does not describe (the local stack); skips the lookup")
	startFunctions := fl.String("start-functions", "", "with -cluster: `names` of the functions that start sandboxes (comma-separated), to throttle")
	timeout := fl.Duration("timeout", undeploy.DefaultTimeout, "how long to wait for the sandboxes to stop")
	poll := fl.Duration("poll", undeploy.DefaultPoll, "wait between two looks at the cluster's tasks")
	yes := fl.Bool("yes", false, "do not ask for confirmation (and run sam delete with --no-prompts)")
	printDelete := fl.Bool("print-delete", false, "print the sam delete command instead of running it")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: undeploy [flags]   (make undeploy ARGS=\"…\")")
		fmt.Fprintln(stderr, "Stops every sandbox of the stack gracefully, then deletes the stack with sam delete.")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "undeploy: unexpected argument %q\n", fl.Arg(0))
		return exitUsage
	}
	if *startFunctions != "" && *cluster == "" {
		fmt.Fprintln(stderr, "undeploy: -start-functions goes with -cluster")
		return exitUsage
	}
	st, err := target.Resolve(ctx)
	switch {
	case errors.Is(err, stackref.ErrUsage):
		fmt.Fprintln(stderr, "undeploy:", strings.TrimPrefix(err.Error(), stackref.ErrUsage.Error()+": "))
		return exitUsage
	case err != nil:
		fmt.Fprintln(stderr, "undeploy:", err)
		return exitFailed
	}
	stack, cfg := st.Name, st.AWS

	resolved := undeploy.Target{Stack: stack, Cluster: *cluster, StartFunctions: map[string]string{}}
	if *cluster != "" {
		for i, name := range strings.Split(*startFunctions, ",") {
			if name = strings.TrimSpace(name); name != "" {
				resolved.StartFunctions[fmt.Sprintf("start function %d", i+1)] = name
			}
		}
	} else if resolved, err = undeploy.Resolve(ctx, cloudformation.NewFromConfig(cfg), stack); err != nil {
		fmt.Fprintln(stderr, "undeploy:", err)
		return exitFailed
	}

	fmt.Fprintf(stdout, "This stops every sandbox of stack %s in %s (cluster %s) and then deletes the stack.\n",
		stack, cfg.Region, orNone(resolved.Cluster))
	if !*yes {
		fmt.Fprintf(stdout, "Type the stack name to go on: ")
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.TrimSpace(line) != stack {
			fmt.Fprintln(stdout, "nothing done")
			return exitFailed
		}
	}

	u := &undeploy.Undeployer{Target: resolved, ECS: ecs.NewFromConfig(cfg), Lambda: lambda.NewFromConfig(cfg),
		Out: stdout, Timeout: *timeout, Poll: *poll}
	if err := u.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "undeploy:", err)
		fmt.Fprintln(stderr, "undeploy: the stack was not deleted; run make undeploy again (a longer -timeout lets slow syncs finish)")
		return exitFailed
	}

	profileName := st.Profile
	del := undeploy.DeleteCommand(stack, cfg.Region, profileName, *yes)
	_, lookErr := exec.LookPath(del[0])
	if *printDelete || lookErr != nil {
		if lookErr != nil && !*printDelete {
			fmt.Fprintln(stdout, "SAM CLI is not installed here.")
		}
		fmt.Fprintf(stdout, "Delete the stack with:\n  %s\n", undeploy.ShellQuote(del))
		fmt.Fprintf(stdout, "Until then no sandbox starts; to serve again instead: %s\n", undoCommand(resolved, cfg.Region))
		return exitOK
	}
	fmt.Fprintf(stdout, "%s\n", undeploy.ShellQuote(del))
	cmd := exec.CommandContext(ctx, del[0], del[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(stderr, "undeploy: sam delete:", err)
		fmt.Fprintf(stderr, "undeploy: the sandboxes are stopped and none starts; delete the stack with %s, or serve again: %s\n",
			undeploy.ShellQuote(del), undoCommand(resolved, cfg.Region))
		return exitFailed
	}
	return exitOK
}

// undoCommand lifts the hold on the start functions.
func undoCommand(t undeploy.Target, region string) string {
	var cmds []string
	for _, name := range t.StartFunctions {
		cmds = append(cmds, undeploy.ShellQuote([]string{"aws", "lambda", "delete-function-concurrency", "--function-name", name, "--region", region}))
	}
	if len(cmds) == 0 {
		return "nothing to undo"
	}
	sort.Strings(cmds)
	return strings.Join(cmds, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
