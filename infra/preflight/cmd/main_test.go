package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pt "github.com/sandgate/sandgate/infra/preflight/preflighttest"
)

const template = "../../../template.yaml"

// isolate clears the AWS configuration the developer's environment may hold (keeping
// AWS_CA_BUNDLE, which CI sets and the SDK must cope with), points the shared files
// at nothing, turns the instance metadata service off, then sets env.
func isolate(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AWS_") && name != "AWS_CA_BUNDLE" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// overrides are parameter values every check passes with in preflighttest's account,
// as sam deploy --parameter-overrides takes them.
func overrides(bucket string) string {
	return `SandboxImage="` + pt.Image + `" SubnetIds="` + pt.SubnetA + "," + pt.SubnetB + `" ` +
		`FunctionSecurityGroupIds="sg-0a1b2c3d4e5f60001" SandboxSecurityGroupIds="sg-0a1b2c3d4e5f60002" BucketName="` + bucket + `"`
}

// samconfig writes a samconfig.toml as sam deploy --guided does.
func samconfig(t *testing.T, region, bucket string) string {
	t.Helper()
	escaped := strings.ReplaceAll(overrides(bucket), `"`, `\"`)
	body := "version = 0.1\n[default.global.parameters]\nstack_name = \"sandgate\"\n\n[default.deploy.parameters]\n" +
		"capabilities = \"CAPABILITY_IAM\"\nregion = \"" + region + "\"\nparameter_overrides = \"" + escaped + "\"\n"
	path := filepath.Join(t.TempDir(), "samconfig.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

type jsonReport struct {
	Account, Region string
	Sources         []string `json:"parameterSources"`
	Checks          []struct{ Check, Status, Summary, Fix string }
	Failed          int
	OK              bool
}

// samconfig.toml's parameters and region, with -parameter-overrides over them; the
// region is samconfig's even with AWS_REGION set, as sam deploy would choose.
func TestRun_SamconfigUnderFlags_JSON(t *testing.T) {
	acct := pt.StartAccount(t)
	env := acct.Env(acct.Operator)
	env["AWS_REGION"] = "us-east-2"
	isolate(t, env)
	cfg := samconfig(t, pt.Region, "sandgate-not-this-one")
	code, stdout, stderr := runCmd(t, "-template", template, "-config-file", cfg, "-parameter-overrides", "BucketName="+pt.Bucket, "--json")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if !rep.OK || rep.Failed != 0 || rep.Region != pt.Region || rep.Account != pt.AccountID || len(rep.Checks) != 10 {
		t.Fatalf("report %+v", rep)
	}
	wantSources := []string{"-parameter-overrides", cfg + " [default.deploy.parameters] parameter_overrides", template + " defaults"}
	if strings.Join(rep.Sources, "|") != strings.Join(wantSources, "|") {
		t.Fatalf("sources %q, want %q", rep.Sources, wantSources)
	}
}

// A failing check exits 1 and says how to fix it.
func TestRun_FailingCheck_ExitsOne(t *testing.T) {
	acct := pt.StartAccount(t)
	isolate(t, acct.Env(acct.Operator))
	code, stdout, _ := runCmd(t, "-template", template, "-config-file", samconfig(t, pt.Region, "sandgate-nowhere"))
	if code != exitFailed {
		t.Fatalf("exit %d, want 1:\n%s", code, stdout)
	}
	for _, want := range []string{"FAIL  bucket", "no bucket sandgate-nowhere", "fix: aws s3api create-bucket --bucket sandgate-nowhere", "1 of 10 checks failed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in:\n%s", want, stdout)
		}
	}
}

// No credentials anywhere: one clear failure with its fix, the rest skipped, no trace.
func TestRun_NoCredentials(t *testing.T) {
	isolate(t, nil)
	code, stdout, stderr := runCmd(t, "-template", template, "-region", pt.Region, "-parameter-overrides", overrides(pt.Bucket))
	if code != exitFailed || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"FAIL  credentials", "no usable AWS credentials", "fix: sign in with the credentials you deploy with", "SKIP  signing-secret", "1 of 10 checks failed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "goroutine") || strings.Contains(stdout, "panic") {
		t.Fatalf("a trace:\n%s", stdout)
	}
}

// A profile that does not exist is the credentials check's failure, not a crash.
func TestRun_UnknownProfile(t *testing.T) {
	isolate(t, nil)
	code, stdout, _ := runCmd(t, "-template", template, "-region", pt.Region, "-profile", "nosuch", "-parameter-overrides", overrides(pt.Bucket), "-json")
	var rep jsonReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if code != exitFailed || rep.Checks[1].Status != "fail" || !strings.Contains(rep.Checks[1].Summary, "cannot load the AWS configuration") ||
		!strings.Contains(rep.Checks[1].Summary, "nosuch") {
		t.Fatalf("exit %d, %+v", code, rep.Checks[1])
	}
}

// Credentials that may read nothing: each check names the action it was denied.
func TestRun_AccessDenied(t *testing.T) {
	acct := pt.StartAccount(t)
	isolate(t, acct.Env(acct.Viewer))
	code, stdout, _ := runCmd(t, "-template", template, "-parameter-overrides", overrides(pt.Bucket))
	if code != exitFailed {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	for _, want := range []string{"OK    credentials              arn:aws:iam::123456789012:user/viewer",
		"FAIL  signing-secret           access denied: these credentials may not call secretsmanager:GetSecretValue",
		"FAIL  bucket                   bucket " + pt.Bucket + ": access denied to s3:ListBucket"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in:\n%s", want, stdout)
		}
	}
}

func TestRun_UsageErrors(t *testing.T) {
	isolate(t, nil)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown flag":        {[]string{"-nope"}, "flag provided but not defined"},
		"argument":            {[]string{"SandboxImage=x"}, "unexpected argument"},
		"overrides":           {[]string{"-parameter-overrides", `A="unterminated`}, "unterminated quote"},
		"missing config file": {[]string{"-config-file", filepath.Join(t.TempDir(), "samconfig.toml")}, "no such file"},
		"bad config file":     {[]string{"-config-file", writeFile(t, "[[x]]\n")}, "line 1: arrays of tables"},
		"missing template":    {[]string{"-template", filepath.Join(t.TempDir(), "template.yaml")}, "read template"},
	} {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout, stderr, tc.want)
			}
		})
	}
	code, _, stderr := runCmd(t, "-h")
	if code != exitOK || !strings.Contains(stderr, "-parameter-overrides") {
		t.Fatalf("-h: exit %d, %q", code, stderr)
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "samconfig.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
