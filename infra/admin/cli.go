package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/sandgate/sandgate/infra/stackref"
	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/cleanup"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// LocalEnvFile is the local stack's operator file, which make dev writes.
const LocalEnvFile = ".sandgate/aws.env"

// commands, in the order usage lists them.
var commands = []struct{ name, args, help string }{
	{"list", "[-all] [-state S,…] [-user-prefix P] [-json]", "live sandboxes: user, state, generation, age, task, last sync, connections, queued frames"},
	{"inspect", "[-json] <userId>", "everything about one user: record, lease, task, connections, inbox, storage, recent task ends, items"},
	{"stop", "[-wait] [-timeout D] [-json] <userId>", "stop a user's sandbox gracefully (its final sync); reaps a dead lease"},
	{"revoke", "[-json] <userId>", "refuse the user's URLs signed before now and close their connections"},
	{"delete-user", "[-dry-run] [-yes] [-json] <userId>", "revoke, stop, then delete the user's objects, backups and items under the purge lock"},
	{"list-backups", "[-json] <userId>", "the user's backups: id, when, files, bytes, the sync each captured"},
	{"restore-backup", "--from <id or time> [-yes] [-json] <userId>", "stop the sandbox, back up the prefix as it is, replace it with the backup; reports what changed"},
	{"reconcile", "[-json]", "repair the capacity counter from the records and ECS (the cleanup pass's code)"},
	{"import-bucket", "-source-bucket B [-flat-to userId] [-dry-run] [-json]", "copy a bucket of the original design into users' prefixes"},
}

// Run runs the command line args and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("admin", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var stack stackref.Flags
	stack.Register(fl)
	local := fl.Bool("local", false, "work on the local stack of make dev (-aws-env "+LocalEnvFile+")")
	envFile := fl.String("aws-env", "", "work on the stack this `file` names, as `source file` would (the local stack's aws.env)")
	table := fl.String("table", "", "the table (default: the stack's TableName output, or $"+EnvTable+")")
	bucket := fl.String("bucket", "", "the bucket (default: the stack's BucketName, or $"+EnvBucket+")")
	cluster := fl.String("cluster", "", "the sandboxes' cluster (default: the stack's ClusterName, or $"+EnvCluster+")")
	mgmt := fl.String("management-endpoint", "", "the WebSocket stage's management endpoint (default: the stack's ManagementEndpoint, or $"+EnvManagementEndpoint+")")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: admin [flags] <command> [command flags]   (make admin ARGS=\"…\")")
		fmt.Fprintln(stderr, "Commands:")
		for _, c := range commands {
			fmt.Fprintf(stderr, "  %-13s %s\n      %s\n", c.name, c.args, c.help)
		}
		fmt.Fprintln(stderr, "Flags:")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return ExitUsage
	}
	name, rest := fl.Arg(0), fl.Args()[1:]
	cmd, ok := dispatch[name]
	if !ok {
		fmt.Fprintf(stderr, "admin: unknown command %q (run admin -h)\n", name)
		return ExitUsage
	}
	if *local && *envFile == "" {
		*envFile = LocalEnvFile
	}
	if *envFile != "" {
		if err := LoadEnvFile(*envFile); err != nil {
			fmt.Fprintln(stderr, "admin:", err)
			return ExitUsage
		}
	}
	run := &runner{stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	cmdFlags := flag.NewFlagSet("admin "+name, flag.ContinueOnError)
	cmdFlags.SetOutput(stderr)
	exec := cmd(run, cmdFlags)
	if err := parseInterleaved(cmdFlags, rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if err := exec.check(cmdFlags.Args()); err != nil {
		fmt.Fprintf(stderr, "admin %s: %v\n", name, err)
		return ExitUsage
	}

	st, err := stack.Resolve(ctx)
	switch {
	case errors.Is(err, stackref.ErrUsage):
		fmt.Fprintln(stderr, "admin:", strings.TrimPrefix(err.Error(), stackref.ErrUsage.Error()+": "))
		return ExitUsage
	case err != nil:
		fmt.Fprintln(stderr, "admin:", err)
		return ExitFailed
	}
	cfg, ok := fromEnv()
	// A stack named on the command line wins over variables left in the shell.
	ok = ok && (*envFile != "" || stack.StackName == "")
	where := "the stack in " + envOr(*envFile, "the environment")
	if !ok {
		if cfg, err = fromStack(ctx, st); err != nil {
			fmt.Fprintln(stderr, "admin:", err)
			return ExitFailed
		}
		where = "stack " + st.Name + " in " + st.Region
	}
	for _, o := range []struct {
		flag  string
		field *string
	}{{*table, &cfg.Table}, {*bucket, &cfg.Bucket}, {*cluster, &cfg.Cluster}, {*mgmt, &cfg.ManagementEndpoint}} {
		if o.flag != "" {
			*o.field = o.flag
		}
	}
	caller, err := ops.CallerIdentity(ctx, sts.NewFromConfig(st.AWS))
	if err != nil {
		fmt.Fprintln(stderr, "admin: who is calling (sts:GetCallerIdentity):", err)
		return ExitFailed
	}
	run.where = where
	run.cfg, run.aws = cfg, st.AWS
	run.audit = &ops.Audit{Log: slog.New(slog.NewJSONHandler(stderr, nil)), Caller: caller}
	run.admin = ops.New(cfg, st.AWS, run.log, run.audit)
	if err := exec.run(ctx); err != nil {
		fmt.Fprintf(stderr, "admin %s: %v\n", name, err)
		return ExitFailed
	}
	return ExitOK
}

func envOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// parseInterleaved parses flags before and after positional arguments.
func parseInterleaved(fl *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return err
		}
		if fl.NArg() == 0 {
			break
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
	return fl.Parse(append([]string{"--"}, pos...))
}

// runner holds what every command uses.
type runner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
	admin          *ops.Admin
	audit          *ops.Audit
	cfg            cleanup.Config
	aws            aws.Config
	where          string
}

// execution is one parsed command: check validates its positional arguments before
// anything is called, run does it.
type execution struct {
	check func(args []string) error
	run   func(ctx context.Context) error
}

var dispatch = map[string]func(*runner, *flag.FlagSet) execution{
	"list":           (*runner).list,
	"inspect":        (*runner).inspect,
	"stop":           (*runner).stop,
	"revoke":         (*runner).revoke,
	"delete-user":    (*runner).deleteUser,
	"list-backups":   (*runner).listBackups,
	"restore-backup": (*runner).restoreBackup,
	"reconcile":      (*runner).reconcile,
	"import-bucket":  (*runner).importBucket,
}

// oneUser is the check of a command that takes exactly one user id.
func oneUser(user *string) func([]string) error {
	return func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("want one user id, got %d arguments", len(args))
		}
		*user = args[0]
		return nil
	}
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q", args[0])
	}
	return nil
}

func (r *runner) printJSON(v any) error {
	enc := json.NewEncoder(r.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// confirm asks the operator to type want.
func (r *runner) confirm(prompt, want string) bool {
	fmt.Fprintf(r.stdout, "%s Type %s to go on: ", prompt, want)
	line, _ := bufio.NewReader(r.stdin).ReadString('\n')
	return strings.TrimSpace(line) == want
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + (-d).Truncate(time.Second).String()
	case d < time.Minute:
		return d.Truncate(time.Second).String()
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	default:
		return d.Truncate(time.Minute).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
