package preflighttest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/stslocal"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// SigningSecrets is the value of the signing secret StartAccount creates: two secrets
// of 48 bytes (a rotation in progress).
const SigningSecrets = "Qk9PVFNUUkFQLXNpZ25pbmctc2VjcmV0LW9uZS0xMjM0NTY3,Qk9PVFNUUkFQLXNpZ25pbmctc2VjcmV0LXR3by0xMjM0NTY3"

// SigningSecretName is the template's default secret name.
const SigningSecretName = "sandgate/signing-secrets"

const allowAll = `{"Version":"2012-10-17","Statement":[{"Sid":"Administrator","Effect":"Allow","Action":"*","Resource":"*"}]}`

// viewerPolicy allows only what needs no permission anyway.
const viewerPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"WhoAmI","Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}`

// Account is one test's AWS account.
type Account struct {
	// URL serves every service: set it as the SDK's base endpoint (AWS_ENDPOINT_URL).
	URL       string
	Authority *identity.Authority
	// Operator may do anything; Viewer nothing that needs a permission.
	Operator, Viewer identity.Credentials
	Secrets          *secretslocal.Server
	S3               *s3local.Server
	Replay           *Replay
	// SigningSecretARN is the ARN of the seeded signing secret.
	SigningSecretARN string

	clock  atomic.Int64 // offset of the Authority's clock, in nanoseconds
	sts    http.Handler
	secret http.Handler
	s3     http.Handler
}

// StartAccount starts the emulators and the Replay with Passing answers, creates
// Bucket and the signing secret (SigningSecrets under SigningSecretName), and stops
// everything when the test ends. It needs node and the repository's npm packages (the
// policy evaluator), as the local stack does.
func StartAccount(tb testing.TB) *Account {
	tb.Helper()
	a := &Account{Authority: identity.New(AccountID, Region), Replay: NewReplay(Passing())}
	a.Authority.Now = func() time.Time { return time.Now().Add(time.Duration(a.clock.Load())) }
	var err error
	if a.Operator, _, err = a.Authority.AddUser("operator", []identity.Policy{{Name: "operator/administrator", Document: json.RawMessage(allowAll)}}); err != nil {
		tb.Fatal(err)
	}
	if a.Viewer, _, err = a.Authority.AddUser("viewer", []identity.Policy{{Name: "viewer/whoami", Document: json.RawMessage(viewerPolicy)}}); err != nil {
		tb.Fatal(err)
	}
	eval := iampolicy.StartForTest(tb, iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	quiet := slog.New(slog.DiscardHandler)
	a.sts = &stslocal.Server{Authority: a.Authority, Log: quiet}
	a.Secrets = secretslocal.New(a.Authority, eval, quiet)
	a.secret = a.Secrets
	if a.SigningSecretARN, err = a.Secrets.Put(SigningSecretName, SigningSecrets); err != nil {
		tb.Fatal(err)
	}
	a.S3, err = s3local.Start(s3local.Config{Bucket: Bucket, Authority: a.Authority, Authorizer: eval, Log: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.S3.Close() })
	a.s3 = a.S3.Handler()
	srv := httptest.NewServer(a)
	tb.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}

// Advance moves the account's clock, expiring sessions.
func (a *Account) Advance(d time.Duration) { a.clock.Add(int64(d)) }

// Config is an SDK configuration signing as creds, with every service at a.URL and
// nothing taken from the developer's own AWS files.
func (a *Account) Config(tb testing.TB, creds identity.Credentials) aws.Config {
	tb.Helper()
	cfg, err := awsconf.Load(context.Background(),
		config.WithRegion(Region),
		config.WithBaseEndpoint(a.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
		config.WithRetryMaxAttempts(1),
	)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// Env is the environment the command reads to reach this account as creds.
func (a *Account) Env(creds identity.Credentials) map[string]string {
	env := creds.Env()
	env["AWS_ENDPOINT_URL"] = a.URL
	env["AWS_REGION"] = Region
	env["AWS_MAX_ATTEMPTS"] = "1"
	return env
}

// ServeHTTP routes a call by its signature's service (or to the blob store): to the
// Replay when it holds an answer for the operation, else to the service's emulator.
// Every call is recorded.
func (a *Account) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, BlobPath) {
		a.replay(w, r, "ecr", "ecr:blob")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	service := signingService(r)
	op := service + ":" + operation(service, r, body)
	if _, ok := a.Replay.answer(op); ok {
		a.replay(w, r, service, op)
		return
	}
	a.Replay.record(op)
	switch service {
	case "sts":
		a.sts.ServeHTTP(w, r)
	case "secretsmanager":
		a.secret.ServeHTTP(w, r)
	case "s3":
		a.s3.ServeHTTP(w, r)
	default:
		// A call the test gave no answer for: AWS's answer to an unknown operation.
		JSONError(http.StatusBadRequest, "UnknownOperationException", "preflighttest: no answer recorded for "+op).write(w, r, "ecr")
	}
}

func (a *Account) replay(w http.ResponseWriter, r *http.Request, service, op string) {
	a.Replay.record(op)
	ans, ok := a.Replay.answer(op)
	if !ok {
		http.NotFound(w, r)
		return
	}
	ans.write(w, r, service)
}
