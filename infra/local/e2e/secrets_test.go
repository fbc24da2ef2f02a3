package e2e_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
)

// The signing secrets live in Secrets Manager only: no function's environment holds
// one (anyone allowed lambda:GetFunctionConfiguration would read it there), and a
// rotation done as documented — "new,old", then "new" — reaches the authorizer and the
// HTTP API's functions without a restart or a deploy: a URL signed with the new secret
// is accepted, then one signed with the retired secret is refused, on the WebSocket and
// on GET /status alike.
func TestSecrets_RotationWithoutRedeploy(t *testing.T) {
	s := testkit.Start(t, func(o *stack.Options) { o.Overrides["SECRETS_REFRESH"] = "1s" })
	const user = "user_rotation"
	for id, fn := range s.Template.Functions {
		for k, v := range fn.Environment {
			if strings.Contains(v, local.DevSecret) {
				t.Errorf("%s: %s holds the signing secret", id, k)
			}
		}
	}
	const newer = "a-rotated-signing-secret-at-least-32-bytes-long"
	oldSigner, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	newSigner, err := auth.NewSigner(newer)
	if err != nil {
		t.Fatal(err)
	}
	accepted := func(signer *auth.Signer) (ws, status bool) {
		u, err := signer.SignURL(s.Gateway.WebSocketURL(), user)
		if err != nil {
			t.Fatal(err)
		}
		c, err := testkit.DialURL(t, u)
		var he *testkit.HandshakeError
		switch {
		case err == nil:
			c.Close()
			ws = true
		case !errors.As(err, &he) || he.Status != http.StatusForbidden:
			t.Fatalf("dial: %v, want a connection or a 403", err)
		}
		pu, _ := url.Parse(u)
		code, _ := s.HTTP(t, http.MethodGet, "/status", pu.RawQuery)
		if code != http.StatusOK && code != http.StatusUnauthorized {
			t.Fatalf("GET /status: %d", code)
		}
		return ws, code == http.StatusOK
	}
	if ws, st := accepted(newSigner); ws || st {
		t.Fatalf("a secret not in the list was accepted (ws %v, status %v)", ws, st)
	}
	if _, err := s.Secrets().Put(stack.SigningSecretName, newer+","+local.DevSecret); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { ws, st := accepted(newSigner); return ws && st },
		func() string { return "the rotated-in secret was never accepted by both APIs" })
	if ws, st := accepted(oldSigner); !ws || !st {
		t.Fatalf("during the rotation the old secret was refused (ws %v, status %v)", ws, st)
	}
	if _, err := s.Secrets().Put(stack.SigningSecretName, newer); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { ws, st := accepted(oldSigner); return !ws && !st },
		func() string { return "the retired secret is still accepted" })
	if ws, st := accepted(newSigner); !ws || !st {
		t.Fatalf("after the rotation the new secret was refused (ws %v, status %v)", ws, st)
	}
}
