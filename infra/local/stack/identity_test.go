package stack_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/stack"
)

// Every endpoint of a running stack refuses a request without a signature, with its
// service's own answer: no emulator is wired without knowing who calls.
func TestStack_EveryEndpointRefusesUnsignedRequests(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	type probe struct {
		method, url, target, body, contentType string
		status                                 int
		code                                   string
	}
	probes := map[string]probe{
		"dynamodb":       {"POST", s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"] + "/", "DynamoDB_20120810.ListTables", "{}", "application/x-amz-json-1.0", 400, "MissingAuthenticationTokenException"},
		"s3":             {"GET", s.Endpoints["AWS_ENDPOINT_URL_S3"] + "/" + s.Bucket + "?list-type=2", "", "", "", 403, "AccessDenied"},
		"ecs":            {"POST", s.Endpoints["AWS_ENDPOINT_URL_ECS"] + "/", "AmazonEC2ContainerServiceV20141113.ListTasks", "{}", "application/x-amz-json-1.1", 400, "MissingAuthenticationTokenException"},
		"lambda":         {"POST", s.Endpoints["AWS_ENDPOINT_URL_LAMBDA"] + "/2015-03-31/functions/" + s.Name("CleanupFunction") + "/invocations", "", "{}", "application/json", 403, "MissingAuthenticationTokenException"},
		"sts":            {"POST", s.Endpoints["AWS_ENDPOINT_URL_STS"] + "/", "", "Action=GetCallerIdentity&Version=2011-06-15", "application/x-www-form-urlencoded", 403, "MissingAuthenticationToken"},
		"secretsmanager": {"POST", s.Endpoints["AWS_ENDPOINT_URL_SECRETS_MANAGER"] + "/", "secretsmanager.GetSecretValue", `{"SecretId":"` + stack.SigningSecretName + `"}`, "application/x-amz-json-1.1", 400, "MissingAuthenticationTokenException"},
		"management API": {"POST", s.Gateway.ManagementEndpoint() + "/@connections/AAAAAAAAAAAAAAAA", "", "x", "text/plain", 403, "Missing Authentication Token"},
	}
	for name, p := range probes {
		req, err := http.NewRequestWithContext(ctx, p.method, p.url, strings.NewReader(p.body))
		if err != nil {
			t.Fatal(err)
		}
		if p.target != "" {
			req.Header.Set("X-Amz-Target", p.target)
		}
		if p.contentType != "" {
			req.Header.Set("Content-Type", p.contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		said := string(b) + " " + resp.Header.Get("X-Amzn-Errortype")
		if resp.StatusCode != p.status || !strings.Contains(said, p.code) {
			t.Errorf("%s: unsigned request answered %d %q, want %d %s", name, resp.StatusCode, said, p.status, p.code)
		}
	}
}
