package testkit

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// AWSCLITimeout bounds one AWS CLI command (the Python CLI starts slowly on a loaded
// machine).
const AWSCLITimeout = 2 * time.Minute

// AWSCLI returns the path of the AWS CLI (`aws` on PATH), skipping the test when it
// is absent — the only reason a test of the CLI against the local stack may skip.
func AWSCLI(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("aws")
	if err != nil {
		tb.Skipf("skipped: the aws binary (AWS CLI) is not on PATH (%v); install awscli to run this test", err)
	}
	return path
}

// RunAWSCLI runs `aws args…` signed with creds in region, as an operator would with
// the stack's credentials, and returns its stdout, stderr and exit error. The
// environment carries nothing of the developer's AWS set-up: no AWS_* variable but the
// credentials and region, no shared config or credentials file (an empty config that
// asks for path-style S3 addressing instead), and no AWS_CA_BUNDLE, which the CLI
// cannot use with a plain-HTTP endpoint either (FACTS.md). Pass --endpoint-url in args.
func RunAWSCLI(tb testing.TB, region string, creds identity.Credentials, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	path := AWSCLI(tb)
	dir := tb.TempDir()
	config := filepath.Join(dir, "config")
	if err := os.WriteFile(config, []byte("[default]\ns3 =\n    addressing_style = path\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"AWS_CONFIG_FILE="+config,
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "credentials"),
		"AWS_DEFAULT_REGION="+region,
		"AWS_REGION="+region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_PAGER=",
	)
	for k, v := range creds.Env() {
		env = append(env, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), AWSCLITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}
