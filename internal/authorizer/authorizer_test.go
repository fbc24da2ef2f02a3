package authorizer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/secretcache"
)

// The sample event is signed with the local development secret for this instant.
const eventExp = 1767225600

func loadEvent(t *testing.T) authorizer.Request {
	t.Helper()
	b, err := os.ReadFile("../../events/authorize.json")
	if err != nil {
		t.Fatal(err)
	}
	var req authorizer.Request
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	return req
}

func newHandler(t *testing.T, logs *bytes.Buffer) *authorizer.Handler {
	t.Helper()
	return newHandlerAt(t, logs, time.Unix(eventExp-300, 0))
}

func newHandlerAt(t *testing.T, logs *bytes.Buffer, now time.Time) *authorizer.Handler {
	t.Helper()
	cfg := authorizer.LoadConfig(config.New(config.Map(map[string]string{
		authorizer.EnvSigningSecretID: "sandgate/signing-secrets",
	})))
	cfg.Now = func() time.Time { return now }
	v, err := cfg.ParseVerifier(local.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	return &authorizer.Handler{Verifier: authorizer.Static(v), Log: logging.New(logs, slog.LevelDebug)}
}

func TestHandler_Handle_Allow(t *testing.T) {
	var logs bytes.Buffer
	req := loadEvent(t)
	resp, err := newHandler(t, &logs).Handle(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	st := resp.PolicyDocument.Statement
	if len(st) != 1 || st[0].Effect != "Allow" || st[0].Resource[0] != req.MethodArn {
		t.Fatalf("policy = %+v", resp.PolicyDocument)
	}
	if resp.PrincipalID != "user_alice" || resp.Context[authorizer.ContextUserID] != "user_alice" {
		t.Fatalf("principal %q context %v", resp.PrincipalID, resp.Context)
	}
	line := decodeOneLine(t, logs.Bytes())
	if line[logging.UserID] != "user_alice" || line[logging.ConnectionID] != req.RequestContext.ConnectionID {
		t.Fatalf("log line lacks user or connection: %v", line)
	}
}

func TestHandler_Handle_Deny(t *testing.T) {
	tamper := map[string]func(r *authorizer.Request){
		"forged signature": func(r *authorizer.Request) { setQuery(r, "sig", strings.Repeat("x", 43)) },
		"tampered user":    func(r *authorizer.Request) { setQuery(r, "userId", "user_bob") },
		"no query":         func(r *authorizer.Request) { r.QueryStringParameters, r.MultiValueQueryStringParameters = nil, nil },
		"duplicated user": func(r *authorizer.Request) {
			r.MultiValueQueryStringParameters["userId"] = []string{"user_alice", "user_bob"}
		},
		"10 KB user": func(r *authorizer.Request) { setQuery(r, "userId", "user_"+strings.Repeat("a", 10<<10)) },
	}
	for name, f := range tamper {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			req := loadEvent(t)
			f(&req)
			resp, err := newHandler(t, &logs).Handle(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.PolicyDocument.Statement[0].Effect != "Deny" || resp.Context != nil {
				t.Fatalf("want Deny with no context, got %+v", resp)
			}
			line := decodeOneLine(t, logs.Bytes())
			if line[logging.Reason] == nil || line[slog.LevelKey] != "WARN" {
				t.Fatalf("refusal not logged with a reason: %v", line)
			}
			if logs.Len() > 1024 {
				t.Fatalf("log line is %d bytes: attacker input leaks into logs", logs.Len())
			}
		})
	}
}

func TestHandler_Handle_Expired(t *testing.T) {
	var logs bytes.Buffer
	h := newHandlerAt(t, &logs, time.Unix(eventExp+3600, 0))
	resp, _ := h.Handle(context.Background(), loadEvent(t))
	if resp.PolicyDocument.Statement[0].Effect != "Deny" {
		t.Fatal("expired URL allowed")
	}
	if line := decodeOneLine(t, logs.Bytes()); line[logging.Reason] != "expired" {
		t.Fatalf("reason = %v", line[logging.Reason])
	}
}

// Neither the signature nor any secret may reach a log, whatever the outcome.
func TestHandler_Handle_LogsNoSecrets(t *testing.T) {
	var logs bytes.Buffer
	h := newHandler(t, &logs)
	valid := loadEvent(t)
	sig := valid.QueryStringParameters["sig"]
	forged := loadEvent(t)
	setQuery(&forged, "sig", auth.Signature([]byte("some-other-secret-of-at-least-32-bytes"), "user_alice", eventExp))
	for _, req := range []authorizer.Request{valid, forged} {
		if _, err := h.Handle(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	out := logs.String()
	if strings.Count(out, "\n") != 2 {
		t.Fatalf("want two log lines, got:\n%s", out)
	}
	for _, secret := range []string{sig, forged.QueryStringParameters["sig"], local.DevSecret, "some-other-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains %q:\n%s", secret, out)
		}
	}
}

func TestLoadConfig_FailsClosed(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"unset":          {},
		"refresh zero":   {authorizer.EnvSigningSecretID: "s", authorizer.EnvSecretsRefresh: "0s"},
		"refresh a week": {authorizer.EnvSigningSecretID: "s", authorizer.EnvSecretsRefresh: "168h"},
	} {
		t.Run(name, func(t *testing.T) {
			e := config.New(config.Map(env))
			authorizer.LoadConfig(e)
			if e.Err() == nil {
				t.Fatal("configuration accepted")
			}
		})
	}
	e := config.New(config.Map(map[string]string{
		authorizer.EnvSigningSecretID: "sandgate/signing-secrets",
		authorizer.EnvMaxLifetime:     "5m",
		authorizer.EnvTable:           "t",
	}))
	cfg := authorizer.LoadConfig(e)
	if err := e.Err(); err != nil || cfg.MaxLifetime != 5*time.Minute || cfg.SecretID != "sandgate/signing-secrets" || cfg.Table != "t" {
		t.Fatalf("cfg = %+v, err = %v", cfg, err)
	}
	for name, value := range map[string]string{"empty": " , ", "short secret": local.DevSecret + ",short"} {
		_, err := cfg.ParseVerifier(value)
		if err == nil || strings.Contains(err.Error(), "short,") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if v, err := cfg.ParseVerifier(local.DevSecret); err != nil || v.MaxLifetime != 5*time.Minute {
		t.Fatalf("verifier %+v, %v", v, err)
	}
	if _, err := cfg.ParseVerifier(""); !errors.Is(err, auth.ErrNoSecret) {
		t.Fatalf("no secret: %v", err)
	}
}

func setQuery(r *authorizer.Request, k, v string) {
	r.QueryStringParameters[k] = v
	r.MultiValueQueryStringParameters[k] = []string{v}
}

func decodeOneLine(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("want one log line, got:\n%s", b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("log line is not JSON: %v\n%s", err, b)
	}
	return m
}

// Every variable listed as optional has a default: an environment with the secret and
// the table alone loads, and each optional one is really read.
func TestLoadConfig_Optional(t *testing.T) {
	env := config.New(config.Map(map[string]string{authorizer.EnvSigningSecretID: "sandgate/signing-secrets", authorizer.EnvTable: "t"}))
	c := authorizer.LoadConfig(env)
	if err := env.Err(); err != nil || c.Refresh != secretcache.DefaultRefresh || c.MaxLifetime != auth.DefaultMaxLifetime || c.ClockSkew != auth.DefaultClockSkew || c.LogLevel != slog.LevelInfo {
		t.Fatalf("config %+v, %v", c, err)
	}
	read := map[string]bool{}
	for _, n := range env.Names() {
		read[n] = true
	}
	for _, n := range authorizer.Optional {
		if !read[n] {
			t.Errorf("%s is listed as optional but not read", n)
		}
	}
}

func TestReason_Names(t *testing.T) {
	for err, want := range map[error]string{
		auth.ErrMalformed: "malformed", auth.ErrBadUserID: "bad_user_id", auth.ErrExpired: "expired",
		auth.ErrTooFarAhead: "too_far_ahead", auth.ErrBadSignature: "bad_signature", errors.New("other"): "error",
		secretcache.ErrUnavailable: "unavailable",
	} {
		if got := authorizer.Reason(fmt.Errorf("wrapped: %w", err)); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}
