package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// The env-vars file make dev writes is what `sam local invoke --env-vars` needs: an
// entry for every function of the template, only variables the template declares (SAM
// CLI ignores the rest), the endpoint variable pointing at the running stack, and no
// secret. make invoke runs functions with it as SAM CLI would — the file's values, the
// caller's credentials from .sandgate/aws.env — and they work against the stack.
// (SAM CLI itself cannot be installed on these machines; README says so.)
func TestStack_SAMEnv_RunsTheFunctionsAgainstTheStack(t *testing.T) {
	s := apps.Get(t)
	dir := t.TempDir()
	envFile := filepath.Join(dir, stack.SAMEnvFile)
	if err := s.WriteSAMEnv(envFile); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	for id, fn := range s.Template.Functions {
		vars, ok := file[id]
		if !ok {
			t.Errorf("no entry for %s", id)
			continue
		}
		for k := range vars {
			if _, declared := fn.Environment[k]; !declared {
				t.Errorf("%s: %s is not declared in the template; SAM CLI would ignore it", id, k)
			}
		}
		if vars["AWS_ENDPOINT_URL"] != s.AWSEndpoint {
			t.Errorf("%s: AWS_ENDPOINT_URL = %q, want the stack's endpoint %s", id, vars["AWS_ENDPOINT_URL"], s.AWSEndpoint)
		}
	}
	for name, secret := range map[string]string{"the operator's secret key": s.Operator().SecretAccessKey, "the signing secret": local.DevSecret} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the env-vars file holds %s", name)
		}
	}

	invoke := filepath.Join(dir, "invoke")
	build := exec.Command("go", "build", "-o", invoke, "../cmd/invoke")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build invoke: %v\n%s", err, out)
	}
	awsEnv := filepath.Join(dir, stack.AWSEnvFile)
	if err := s.WriteAWSEnv(awsEnv); err != nil {
		t.Fatal(err)
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// As the Makefile's invoke target runs it: the operator's credentials sourced from
	// aws.env, nothing else of this process's environment.
	run := func(fn, event string, extra ...string) (string, error) {
		args := append([]string{"-template", filepath.Join(root, "template.yaml"), "-fn", fn,
			"-event", filepath.Join(root, "events", event), "-build", testkit.Binaries(t).Dir, "-env-vars", envFile}, extra...)
		cmd := exec.Command("bash", "-c", `set -a; . "$1"; set +a; shift; exec "$@"`, "_", awsEnv, invoke)
		cmd.Args = append(cmd.Args, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		out, err := cmd.Output()
		return string(out), err
	}
	if out, err := run("AuthorizeFunction", "authorize.json"); err != nil || !strings.Contains(out, `"Allow"`) {
		t.Errorf("AuthorizeFunction: %v\n%s", err, out)
	}
	// Connect records the sample's connection for its user in the stack's table and
	// starts the user's sandbox there.
	if out, err := run("ConnectFunction", "connect.json"); err != nil || !strings.Contains(out, `"statusCode":200`) {
		t.Fatalf("ConnectFunction: %v\n%s", err, stderrOf(err)+out)
	}
	sb, err := s.Store.Get(t.Context(), "user_alice")
	if err != nil || sb == nil || sb.State == state.Stopped {
		t.Fatalf("after the invoked Connect, user_alice's record is %+v (%v)", sb, err)
	}
	if out, err := run("StatusFunction", "status.json"); err != nil || !strings.Contains(out, `"statusCode":200`) {
		t.Errorf("StatusFunction: %v\n%s", err, out)
	}
	if out, err := run("DisconnectFunction", "disconnect.json"); err != nil {
		t.Errorf("DisconnectFunction: %v\n%s", err, out)
	}

	// A file whose stack is gone is refused before the function runs, saying so.
	stale := filepath.Join(dir, "stale.json")
	if err := os.WriteFile(stale, []byte(strings.ReplaceAll(string(raw), s.AWSEndpoint, "http://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	envFile = stale
	if out, err := run("AuthorizeFunction", "authorize.json"); err == nil {
		t.Errorf("a stale env-vars file was used: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || !strings.Contains(string(ee.Stderr), "not answering") {
		t.Errorf("a stale env-vars file: %v", err)
	}
}

// stderrOf is what a failed command wrote to its standard error.
func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
