package main

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/internal/auth"
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
	effect := func(out []byte) string {
		t.Helper()
		var resp struct {
			PolicyDocument struct {
				Statement []struct{ Effect string } `json:"Statement"`
			} `json:"policyDocument"`
		}
		if err := json.Unmarshal(out, &resp); err != nil || len(resp.PolicyDocument.Statement) != 1 {
			t.Fatalf("stdout is not a policy: %v\n%s", err, out)
		}
		return resp.PolicyDocument.Statement[0].Effect
	}
	// The sample event, recorded long ago, is signed anew at invoke time: the README's
	// command is admitted.
	if e := effect(stdout.Bytes()); e != "Allow" {
		t.Fatalf("effect %s, want Allow for the freshly signed sample\nstderr: %s", e, stderr.String())
	}
	if !strings.Contains(stderr.String(), "[AuthorizeFunction] ") || !strings.Contains(stderr.String(), "signed user_alice's query anew") {
		t.Fatalf("stderr: %s", stderr.String())
	}
	// Kept as recorded, its expiry has passed and the authorizer denies it.
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction",
		"-event", "../../../../events/authorize.json", "-build", build, "-fresh-signature=false"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	if e := effect(stdout.Bytes()); e != "Deny" {
		t.Fatalf("effect %s, want Deny for the expired recorded signature", e)
	}

	// A -env override reaches the function: a signing secret that does not exist makes
	// it fail to start.
	stdout.Reset()
	stderr.Reset()
	code = run([]string{"-template", "../../../../template.yaml", "-fn", "AuthorizeFunction",
		"-event", "../../../../events/authorize.json", "-build", build, "-env", "SIGNING_SECRET_ID=sandgate/absent"}, &stdout, &stderr)
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

// Every sample event that carries a signed query is signed anew, in each of the places
// API Gateway puts the query; the others pass unchanged.
func TestResign_SampleEvents(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	for _, name := range []string{"authorize", "connect", "status", "prewarm", "message", "cleanup"} {
		b, err := os.ReadFile("../../../../events/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		out, who, err := resign(b, local.DevSecret, now)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if who == "" {
			if !bytes.Equal(out, b) {
				t.Errorf("%s: an event without a signed query was changed", name)
			}
			continue
		}
		v, err := auth.NewVerifier([]string{local.DevSecret})
		if err != nil {
			t.Fatal(err)
		}
		v.Now = func() time.Time { return now }
		var ev struct {
			QueryStringParameters map[string]string   `json:"queryStringParameters"`
			MultiValue            map[string][]string `json:"multiValueQueryStringParameters"`
			RawQueryString        *string             `json:"rawQueryString"`
		}
		if err := json.Unmarshal(out, &ev); err != nil {
			t.Fatal(err)
		}
		q := url.Values{}
		for k, val := range ev.QueryStringParameters {
			q.Set(k, val)
		}
		if _, err := v.VerifyQuery(q); err != nil {
			t.Errorf("%s: queryStringParameters: %v", name, err)
		}
		if ev.MultiValue != nil {
			if _, err := v.VerifyQuery(ev.MultiValue); err != nil {
				t.Errorf("%s: multiValueQueryStringParameters: %v", name, err)
			}
		}
		if ev.RawQueryString != nil {
			raw, err := url.ParseQuery(*ev.RawQueryString)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.VerifyQuery(raw); err != nil {
				t.Errorf("%s: rawQueryString: %v", name, err)
			}
		}
	}
}
