package secretslocal_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

type fixture struct {
	srv   *secretslocal.Server
	url   string
	creds identity.Credentials
	asked []identity.Request
}

func start(t *testing.T) *fixture {
	t.Helper()
	a := identity.New("000000000000", "us-east-1")
	if _, err := a.AddRole(identity.Role{Name: "fn"}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{}
	var err error
	f.creds, _, err = a.Issue(identity.SessionSpec{RoleARN: a.RoleARN("fn"), SessionName: "AuthorizeFunction"})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = secretslocal.New(a, identity.AuthorizerFunc(func(_ context.Context, r identity.Request) error {
		f.asked = append(f.asked, r)
		if strings.Contains(r.Resource, "forbidden") {
			return &identity.DeniedError{Principal: r.Principal.ARN, Action: r.Action, Resource: r.Resource}
		}
		return nil
	}), nil)
	hs := httptest.NewServer(f.srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

func (f *fixture) client(c identity.Credentials) *secretsmanager.Client {
	return secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)})
}

// A rotation adds a version: AWSCURRENT moves to it and the old one becomes
// AWSPREVIOUS, each readable by stage and by id, by name and by ARN.
func TestServer_Rotation_VersionStages(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	arn, err := f.srv.Put("sandgate/signing-secrets", "first-secret-of-at-least-32-bytes!!")
	if err != nil {
		t.Fatal(err)
	}
	cl := f.client(f.creds)
	get := func(in *secretsmanager.GetSecretValueInput) *secretsmanager.GetSecretValueOutput {
		t.Helper()
		out, err := cl.GetSecretValue(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := get(&secretsmanager.GetSecretValueInput{SecretId: aws.String("sandgate/signing-secrets")})
	if aws.ToString(first.SecretString) != "first-secret-of-at-least-32-bytes!!" || aws.ToString(first.ARN) != arn {
		t.Fatalf("first = %q at %s", aws.ToString(first.SecretString), aws.ToString(first.ARN))
	}
	put, err := cl.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(arn), SecretString: aws.String("second")})
	if err != nil {
		t.Fatal(err)
	}
	if cur := get(&secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)}); aws.ToString(cur.SecretString) != "second" || aws.ToString(cur.VersionId) != aws.ToString(put.VersionId) {
		t.Fatalf("current after rotation = %q", aws.ToString(cur.SecretString))
	}
	prev := get(&secretsmanager.GetSecretValueInput{SecretId: aws.String(arn), VersionStage: aws.String(secretslocal.StagePrevious)})
	if aws.ToString(prev.SecretString) != "first-secret-of-at-least-32-bytes!!" || aws.ToString(prev.VersionId) != aws.ToString(first.VersionId) {
		t.Fatalf("previous = %q", aws.ToString(prev.SecretString))
	}
	if byID := get(&secretsmanager.GetSecretValueInput{SecretId: aws.String(arn[:len(arn)-7]), VersionId: first.VersionId}); aws.ToString(byID.SecretString) != "first-secret-of-at-least-32-bytes!!" {
		t.Fatalf("by id through the partial ARN = %q", aws.ToString(byID.SecretString))
	}
	d, err := cl.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(arn)})
	if err != nil || len(d.VersionIdsToStages) != 2 || d.VersionIdsToStages[aws.ToString(put.VersionId)][0] != secretslocal.StageCurrent {
		t.Fatalf("describe = %+v, %v", d, err)
	}
	if _, err := cl.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn), VersionStage: aws.String(secretslocal.StagePending)}); testkit.ErrorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("no pending version: err = %v", err)
	}
	if _, err := cl.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("nope")}); testkit.ErrorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("missing secret: err = %v", err)
	}
	last := f.asked[len(f.asked)-1]
	if last.Action != "secretsmanager:GetSecretValue" || last.Principal.SessionName != "AuthorizeFunction" {
		t.Fatalf("authorised %+v", last)
	}
}

// The authorizer's denial is AccessDeniedException; bad signatures get Secrets
// Manager's own errors.
func TestServer_Refusals(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	if _, err := f.srv.Put("forbidden", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client(f.creds).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("forbidden")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("denied: err = %v", err)
	}
	bad := f.creds
	bad.SecretAccessKey = strings.Repeat("y", 40)
	if _, err := f.client(bad).ListSecrets(ctx, &secretsmanager.ListSecretsInput{}); testkit.ErrorCode(err) != "InvalidSignatureException" {
		t.Fatalf("bad signature: err = %v", err)
	}
	unknown := identity.Credentials{AccessKeyID: "AKIAAAAAAAAAAAAAAAAA", SecretAccessKey: "x"}
	if _, err := f.client(unknown).ListSecrets(ctx, &secretsmanager.ListSecretsInput{}); testkit.ErrorCode(err) != "UnrecognizedClientException" {
		t.Fatalf("unknown key: err = %v", err)
	}
	resp, err := http.Post(f.url, "application/x-amz-json-1.1", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Amzn-Errortype") != "MissingAuthenticationTokenException" {
		t.Fatalf("unsigned: %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"))
	}
}
