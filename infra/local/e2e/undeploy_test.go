package e2e_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/infra/undeploy"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// make undeploy, run as the Makefile runs it with the operator's aws.env, before the
// stack is deleted: every sandbox stops gracefully, its final sync saving what its user
// wrote since the last one (the periodic sync waits an hour here); while it runs and
// after, no sandbox starts (a connect is refused, a frame to a stopped sandbox is
// answered unavailable, a prewarm refused: the start functions are throttled); and the
// deletion is printed as the exact sam delete command. The local stack has no
// CloudFormation, so the cluster and the start functions are named on the command line.
func TestUndeploy_StopsEverySandboxGracefullyAndRefusesStarts(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Overrides["SYNC_INTERVAL"] = "1h"
		o.Overrides["SLEEP_AFTER"] = "10m"
	})
	users := []string{"user_undeployA", "user_undeployB"}
	blobs := map[string][]byte{}
	tasks := map[string]string{}
	clients := map[string]*testkit.Client{}
	for _, user := range users {
		clients[user] = s.DialReady(t, user, coldStart)
		sb := s.Running(t, user, reply)
		tasks[user] = sb.TaskARN
		blobs[user] = randomBytes(t, 64<<10)
		writeFile(t, s.Workspace(t, sb.TaskARN), "data/unsynced.bin", blobs[user])
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "undeploy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../undeploy/cmd").CombinedOutput(); err != nil {
		t.Fatalf("build undeploy: %v\n%s", err, out)
	}
	awsEnv := filepath.Join(dir, stack.AWSEnvFile)
	if err := s.WriteAWSEnv(awsEnv); err != nil {
		t.Fatal(err)
	}
	var starters []string
	for _, id := range undeploy.StartFunctions {
		starters = append(starters, s.Name(id))
	}
	cmd := exec.Command("bash", "-c", `set -a; . "$1"; set +a; shift; exec "$@"`, "_", awsEnv, bin,
		"-stack-name", stack.StackName, "-cluster", s.Cluster, "-start-functions", strings.Join(starters, ","),
		"-yes", "-print-delete", "-poll", "200ms", "-timeout", "2m")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("undeploy: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"stack " + stack.StackName + ": refusing new sandboxes",
		"(" + s.Name("ConnectFunction") + "): reserved concurrency 0",
		"(" + s.Name("PrewarmFunction") + "): reserved concurrency 0",
		"(" + s.Name("PoolFunction") + "): reserved concurrency 0",
		"stopping 2 sandbox(es) in cluster " + s.Cluster,
		"2 of 2 stopped",
		"every sandbox has stopped",
		"Delete the stack with:\n  sam delete --stack-name " + stack.StackName + " --region " + stack.Region + " --no-prompts\n",
		"aws lambda delete-function-concurrency --function-name " + s.Name("ConnectFunction"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}

	for _, user := range users {
		if code := s.ExitCode(t, tasks[user], reply); code != 0 {
			t.Errorf("%s's sandbox exited %d, want 0 (a graceful stop)", user, code)
		}
		if got := s.Object(t, user, "data/unsynced.bin"); !bytes.Equal(got, blobs[user]) {
			t.Errorf("%s's file written after the last periodic sync: %d bytes stored, want %d", user, len(got), len(blobs[user]))
		}
		rec, err := s.Store.Get(t.Context(), user)
		if err != nil || rec.State != state.Stopped {
			t.Errorf("%s's record after undeploy: %+v, %v", user, rec, err)
		}
	}

	// No sandbox starts: not on a connect, not on a frame to a stopped sandbox, not on
	// a prewarm.
	const newcomer = "user_undeployC"
	if c, err := s.TryDial(t, newcomer); err == nil {
		c.Close()
		t.Errorf("a connect was admitted while the start functions are throttled")
	}
	a := clients[users[0]]
	a.Send(`{"type":"notes"}`)
	if reason := a.ErrorFrame(reply); reason != frames.ReasonUnavailable {
		t.Errorf("a frame to the stopped sandbox: error %q, want %q", reason, frames.ReasonUnavailable)
	}
	if code, body := s.HTTP(t, http.MethodPost, "/prewarm", s.SignedQuery(t, newcomer)); code == http.StatusAccepted {
		t.Errorf("a prewarm was accepted while the start functions are throttled: %v", body)
	}
	for _, user := range append(users, newcomer) {
		want := 1
		if user == newcomer {
			want = 0
		}
		if n := len(s.RunTasks(user)); n != want {
			t.Errorf("%s: %d RunTask calls, want %d", user, n, want)
		}
	}
}
