package sign_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/sdk/go/sign"
)

// The vectors the Node signer is checked against: one file, both signers.
func TestSignature_SharedVectors(t *testing.T) {
	b, err := os.ReadFile("../../testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct {
			Secret, UserID, Sig string
			Exp                 int64
		}
	}
	if err := json.Unmarshal(b, &f); err != nil || len(f.Vectors) == 0 {
		t.Fatalf("vectors: %v (%d)", err, len(f.Vectors))
	}
	for _, v := range f.Vectors {
		if got := sign.Signature([]byte(v.Secret), v.UserID, v.Exp); got != v.Sig {
			t.Errorf("Signature(%q, %d) = %s, want %s", v.UserID, v.Exp, got, v.Sig)
		}
	}
}

// A URL signed here is one sandgate's verifier accepts, until it expires.
func TestSigner_SignURL_AcceptedByTheVerifier(t *testing.T) {
	secret := "a-signing-secret-of-at-least-32-bytes"
	s, err := sign.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	s.Now = func() time.Time { return now }
	raw, err := s.SignURL("wss://abc123.execute-api.eu-west-1.amazonaws.com/prod", "user_abc")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := "userId=user_abc&exp=" + strconv.FormatInt(now.Add(sign.DefaultTTL).Unix(), 10) + "&sig="; !strings.HasPrefix(u.RawQuery, want) {
		t.Fatalf("query %q, want the order %q…", u.RawQuery, want)
	}
	v, err := auth.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	if id, err := v.VerifyQuery(u.Query()); err != nil || id != "user_abc" {
		t.Fatalf("verify: %q, %v", id, err)
	}
	v.Now = func() time.Time { return now.Add(sign.DefaultTTL + time.Minute) }
	if _, err := v.VerifyQuery(u.Query()); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("after its TTL: %v, want expired", err)
	}
	// A base that has a query keeps it.
	if raw, _ := s.SignURL("wss://h/prod?x=1", "user_abc"); !strings.Contains(raw, "?x=1&userId=") {
		t.Fatalf("url %q", raw)
	}
}

// Short or missing secrets, and ids the verifier would refuse, are refused here.
func TestSigner_Refusals(t *testing.T) {
	if _, err := sign.NewSigner(""); !errors.Is(err, sign.ErrNoSecret) {
		t.Errorf("no secret: %v", err)
	}
	if _, err := sign.NewSigner("short"); !errors.Is(err, sign.ErrWeakSecret) {
		t.Errorf("short secret: %v", err)
	}
	s, _ := sign.NewSigner(strings.Repeat("k", sign.MinSecretBytes))
	for _, id := range []string{"", "user_", "User_abc", "user_a-b", "user_" + strings.Repeat("a", 65)} {
		if _, err := s.Sign(id); !errors.Is(err, sign.ErrBadUserID) {
			t.Errorf("Sign(%q): %v, want ErrBadUserID", id, err)
		}
	}
}
