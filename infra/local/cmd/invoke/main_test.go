package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func buildAuthorize(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", filepath.Join(dir, "authorize", "bootstrap"), "../../../../functions/authorize")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	return dir
}

func TestRun_AuthorizeFunction(t *testing.T) {
	build := buildAuthorize(t)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction",
		"-event", "../../../../events/authorize.json", "-build", build}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	var resp struct {
		PrincipalID    string `json:"principalId"`
		PolicyDocument struct {
			Statement []struct{ Effect string } `json:"Statement"`
		} `json:"policyDocument"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil || len(resp.PolicyDocument.Statement) != 1 {
		t.Fatalf("stdout is not a policy: %v\n%s", err, stdout.String())
	}
	// The sample event's URL is signed with the development secret the template's
	// secret resolves to locally, so the verdict depends only on the clock: either
	// way the authorizer ran and logged, tagged with its name.
	if !strings.Contains(stderr.String(), "[AuthorizeFunction] ") {
		t.Fatalf("function logs not tagged: %s", stderr.String())
	}

	// A -env override reaches the function: a short secret makes it fail to start.
	stdout.Reset()
	stderr.Reset()
	code = run([]string{"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction",
		"-event", "../../../../events/authorize.json", "-build", build, "-env", "SIGNING_SECRETS=short"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "Runtime.ExitError") {
		t.Fatalf("exit %d, stdout %s, stderr %s", code, stdout.String(), stderr.String())
	}
}

func TestRun_BadInput(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(notJSON, []byte("{"), 0o644)
	for name, args := range map[string][]string{
		"no fn":          {"-event", "../../../../events/authorize.json"},
		"unknown fn":     {"-template", "../../../../template.yaml", "-fn", "NopeFunction", "-event", "../../../../events/authorize.json"},
		"bad env":        {"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction", "-event", "../../../../events/authorize.json", "-env", "NOEQUALS"},
		"event not json": {"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction", "-event", notJSON},
		"no bootstrap":   {"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction", "-event", "../../../../events/authorize.json", "-build", dir},
		"bad param":      {"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction", "-event", "../../../../events/authorize.json", "-param", "StageName=a/b"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(args, &stdout, &stderr); code != 2 || stderr.Len() == 0 || stdout.Len() != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
		})
	}
}
