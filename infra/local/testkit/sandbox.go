package testkit

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
)

// Logical ids of the template's roles the sandbox helpers issue sessions of.
const (
	SandboxRole = "SandboxRole"
	TaskRole    = "TaskRole"
	RelayRole   = "RelayRole"
)

// Session returns an AWS configuration of the stack signed by a fresh session of the
// template's role logicalID, named sessionName with tags, as the service or the
// function that assumes the role would hold it; its clients reach the emulators through
// the stack's Endpoints (set each client's BaseEndpoint) and make one attempt.
func (s *Stack) Session(tb testing.TB, logicalID, sessionName string, tags map[string]string) aws.Config {
	tb.Helper()
	c, _, err := s.Authority().Issue(identity.SessionSpec{
		RoleARN: s.Authority().RoleARN(stack.RoleName(logicalID)), SessionName: sessionName,
		Duration: time.Hour, Tags: tags,
	})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := s.AWS.Copy()
	cfg.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	cfg.RetryMaxAttempts = 1
	return cfg
}

// SandboxSession returns what the credential vendor hands task taskID of userID: a
// session of SandboxRole named after the task, tagged userId, for an hour. It is what
// a compromised agent of that task holds.
func (s *Stack) SandboxSession(tb testing.TB, userID, taskID string) aws.Config {
	tb.Helper()
	return s.Session(tb, SandboxRole, taskID, map[string]string{vend.TagUserID: userID})
}

// TaskRoleSession returns the session ECS gives task taskID of its task role: what the
// task (its agent, and a workload that reached the credentials endpoint) holds.
func (s *Stack) TaskRoleSession(tb testing.TB, taskID string) aws.Config {
	tb.Helper()
	return s.Session(tb, TaskRole, taskID, nil)
}

// DynamoDBAs returns a DynamoDB client of the stack signed with cfg.
func (s *Stack) DynamoDBAs(cfg aws.Config) *dynamodb.Client {
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"]) })
}

// StartRelay serves the relay function in this process, as a function URL would, for
// agents whose clients connect through a gateway of the test's own: it acts on
// managementEndpoint's connections, reads the stack's table as a session of RelayRole,
// and knows its caller by verifying the request's SigV4 signature with the stack's
// account. It does not authorise lambda:InvokeFunctionUrl (the stack's own relay URL
// does). It returns the URL, and stops when the test ends.
func (s *Stack) StartRelay(tb testing.TB, managementEndpoint string, log *slog.Logger) string {
	tb.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	store := state.New(s.DynamoDBAs(s.Session(tb, RelayRole, "relay-test", nil)), s.Table)
	mcfg, err := awsconf.Load(context.Background(), awsconf.Loopback(managementEndpoint)...)
	if err != nil {
		tb.Fatal(err)
	}
	h := &connrelay.Handler{
		Store: store, API: relay.NewClient(mcfg, managementEndpoint),
		SandboxRole: stack.RoleName(SandboxRole), Account: stack.AccountID, Cluster: s.Cluster, Log: log,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, connrelay.MaxRequestBytes+1))
		if err != nil {
			http.Error(w, `{"Message":"Bad Request"}`, http.StatusBadRequest)
			return
		}
		p, err := s.Authority().Verify(r, identity.Lambda, body)
		if err != nil {
			http.Error(w, `{"Message":"Forbidden"}`, http.StatusForbidden)
			return
		}
		ev := events.LambdaFunctionURLRequest{RawPath: r.URL.Path, Body: string(body)}
		ev.RequestContext.HTTP.Method = r.Method
		ev.RequestContext.Authorizer = &events.LambdaFunctionURLRequestContextAuthorizerDescription{
			IAM: &events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{UserARN: p.ARN, AccountID: p.Account}}
		resp, err := h.Handle(r.Context(), ev)
		if err != nil {
			http.Error(w, `{"Message":"Internal Server Error"}`, http.StatusBadGateway)
			return
		}
		for k, v := range resp.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, bytes.NewReader([]byte(resp.Body)))
	})}
	go srv.Serve(ln)
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// FunctionURL returns the URL of the template function logicalID's function URL.
func (s *Stack) FunctionURL(tb testing.TB, logicalID string) string {
	tb.Helper()
	u := s.Runtime.FunctionURL(s.Name(logicalID))
	if u == "" {
		tb.Fatalf("%s has no function URL", logicalID)
	}
	return u
}
