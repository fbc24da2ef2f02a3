package stack_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/stack"
)

// The file make dev writes points the AWS CLI at the stack as its operator: the
// table, the bucket and the caller's identity are one `source` away. The test needs
// the aws command (make deps and .ci/run install it).
func TestStack_AWSEnv_DrivesTheAWSCLI(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatal("the AWS CLI is not installed (apt-get install awscli; make deps installs it)")
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	path := filepath.Join(t.TempDir(), stack.AWSEnvFile)
	if err := s.WriteAWSEnv(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v: it holds a secret key", path, err, fi.Mode())
	}
	run := func(script string) (string, error) {
		cmd := exec.Command("bash", "-c", "source "+path+" && "+script)
		// Start from a clean slate, as a new shell would: no key of this process's.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(`aws sts get-caller-identity --output json`)
	if err != nil {
		t.Fatalf("sts get-caller-identity: %v\n%s", err, out)
	}
	var who struct{ Arn string }
	if err := json.Unmarshal([]byte(out), &who); err != nil || !strings.HasSuffix(who.Arn, ":user/"+stack.OperatorName) {
		t.Fatalf("caller = %q (%v)", out, err)
	}
	if out, err := run(`aws dynamodb describe-table --table-name "$SANDGATE_TABLE" --output text --query Table.TableStatus`); err != nil || strings.TrimSpace(out) != "ACTIVE" {
		t.Fatalf("describe-table: %v\n%s", err, out)
	}
	if out, err := run(`echo hi > /tmp/sandgate-awsenv-$$ && aws s3 cp /tmp/sandgate-awsenv-$$ "s3://$SANDGATE_BUCKET/users/user_cli/x" && aws s3 ls "s3://$SANDGATE_BUCKET/users/user_cli/"`); err != nil || !strings.Contains(out, " x") {
		t.Fatalf("s3 cp and ls: %v\n%s", err, out)
	}
	// A wrong secret is refused: the stack checks who calls.
	if out, err := run(`export AWS_SECRET_ACCESS_KEY=wrongwrongwrongwrongwrongwrongwrongwrong && aws sts get-caller-identity`); err == nil || !strings.Contains(out, "SignatureDoesNotMatch") {
		t.Fatalf("a wrong secret was not refused: %v\n%s", err, out)
	}
}

// In R2 mode the file signs the CLI's s3 and s3api with the parent R2 key (region auto),
// the only key the bucket answers, and everything else as the operator.
func TestStack_AWSEnv_R2_DrivesTheAWSCLI(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatal("the AWS CLI is not installed (apt-get install awscli; make deps installs it)")
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", R2: true, Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	path := filepath.Join(t.TempDir(), stack.AWSEnvFile)
	if err := s.WriteAWSEnv(path); err != nil {
		t.Fatal(err)
	}
	run := func(script string) (string, error) {
		cmd := exec.Command("bash", "-c", "source "+path+" && "+script)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(`echo hi > /tmp/sandgate-awsenv-$$ && aws s3 cp /tmp/sandgate-awsenv-$$ "s3://$SANDGATE_BUCKET/users/user_cli/x" >/dev/null && aws s3api list-objects-v2 --bucket "$SANDGATE_BUCKET" --prefix users/user_cli/ --query 'Contents[].Key' --output text`); err != nil || strings.TrimSpace(out) != "users/user_cli/x" {
		t.Fatalf("s3 cp and s3api list-objects-v2: %v\n%s", err, out)
	}
	if out, err := run(`aws dynamodb describe-table --table-name "$SANDGATE_TABLE" --output text --query Table.TableStatus`); err != nil || strings.TrimSpace(out) != "ACTIVE" {
		t.Fatalf("describe-table: %v\n%s", err, out)
	}
}
