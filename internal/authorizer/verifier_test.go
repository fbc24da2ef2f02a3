package authorizer_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/secretcache"
)

// secretsManager is the local Secrets Manager, its client behind a proxy that can cut
// the network.
func secretsManager(t *testing.T) (*secretslocal.Server, *secretsmanager.Client, *testkit.Proxy) {
	t.Helper()
	a := identity.New("000000000000", "us-east-1")
	if _, err := a.AddRole(identity.Role{Name: "authorize"}); err != nil {
		t.Fatal(err)
	}
	c, _, err := a.Issue(identity.SessionSpec{RoleARN: a.RoleARN("authorize"), SessionName: "AuthorizeFunction"})
	if err != nil {
		t.Fatal(err)
	}
	srv := secretslocal.New(a, nil, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	p := testkit.NewProxy(t, hs.URL)
	api := secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(p.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)})
	return srv, api, p
}

func signedQuery(t *testing.T, secret, user string) url.Values {
	t.Helper()
	s, err := auth.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.SignURL("wss://example.invalid/prod", user)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query()
}

// The verifier reads the secret at start-up and again after each refresh interval: a
// rotation done as documented (put "new,old", then "new") is followed without a
// restart, and a URL signed with the old secret is refused once it is gone.
func TestVerifier_FollowsRotation(t *testing.T) {
	srv, api, _ := secretsManager(t)
	const newer = "a-newer-signing-secret-of-at-least-32-bytes"
	if _, err := srv.Put("sandgate/signing-secrets", local.DevSecret); err != nil {
		t.Fatal(err)
	}
	cfg := authorizer.Config{SecretID: "sandgate/signing-secrets", Refresh: 50 * time.Millisecond,
		MaxLifetime: auth.DefaultMaxLifetime, ClockSkew: auth.DefaultClockSkew}
	v, err := cfg.NewVerifier(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, fresh := signedQuery(t, local.DevSecret, "user_alice"), signedQuery(t, newer, "user_alice")
	if _, err := v.VerifyQuery(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyQuery(ctx, fresh); !errors.Is(err, auth.ErrBadSignature) {
		t.Fatalf("a secret not yet in the list verified: %v", err)
	}
	if _, err := srv.Put("sandgate/signing-secrets", newer+","+local.DevSecret); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { _, err := v.VerifyQuery(ctx, fresh); return err == nil },
		func() string { return "the new secret was never accepted" })
	if _, err := v.VerifyQuery(ctx, old); err != nil {
		t.Fatalf("during the rotation the old secret was refused: %v", err)
	}
	if _, err := srv.Put("sandgate/signing-secrets", newer); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { _, err := v.VerifyQuery(ctx, old); return errors.Is(err, auth.ErrBadSignature) },
		func() string { return "the retired secret is still accepted" })
	if _, err := v.VerifyQuery(ctx, fresh); err != nil {
		t.Fatal(err)
	}
}

// Start-up fails closed: no secret, or one without a usable signing secret.
func TestVerifier_StartFailsClosed(t *testing.T) {
	srv, api, _ := secretsManager(t)
	if _, err := srv.Put("short", "short,"+local.DevSecret); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"absent", "short"} {
		_, err := authorizer.Config{SecretID: id}.NewVerifier(context.Background(), api, nil)
		if !errors.Is(err, secretcache.ErrUnavailable) || strings.Contains(err.Error(), local.DevSecret) {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// When the secrets can no longer be read, the authorizer neither admits nor calls the
// URL bad: the invocation fails (API Gateway answers 500) and the log says why.
func TestHandler_Handle_SecretsUnavailable(t *testing.T) {
	srv, api, proxy := secretsManager(t)
	if _, err := srv.Put("sandgate/signing-secrets", local.DevSecret); err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(eventExp-300, 0)
	cfg := authorizer.Config{SecretID: "sandgate/signing-secrets", Refresh: time.Millisecond, MaxStale: 100 * time.Millisecond,
		MaxLifetime: auth.DefaultMaxLifetime, ClockSkew: auth.DefaultClockSkew, Now: func() time.Time { return clock }}
	v, err := cfg.NewVerifier(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h := &authorizer.Handler{Verifier: v, Log: logging.New(&logs, slog.LevelDebug)}
	if resp, err := h.Handle(context.Background(), loadEvent(t)); err != nil || resp.PolicyDocument.Statement[0].Effect != "Allow" {
		t.Fatalf("%+v, %v", resp, err)
	}
	proxy.Cut(true)
	// Within the stale bound the secrets held still serve.
	time.Sleep(5 * time.Millisecond)
	if resp, err := h.Handle(context.Background(), loadEvent(t)); err != nil || resp.PolicyDocument.Statement[0].Effect != "Allow" {
		t.Fatalf("within the stale bound: %+v, %v", resp, err)
	}
	// Past it, the invocation fails.
	time.Sleep(150 * time.Millisecond)
	logs.Reset()
	_, err = h.Handle(context.Background(), loadEvent(t))
	if !errors.Is(err, secretcache.ErrUnavailable) {
		t.Fatalf("past the stale bound: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(logs.String(), `"reason":"unavailable"`) || strings.Contains(logs.String(), local.DevSecret) {
		t.Fatalf("log: %s", logs.String())
	}
}
