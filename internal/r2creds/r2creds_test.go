package r2creds_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/r2creds"
)

// vector is one case of testdata/vectors.json, computed by testdata/vectors.mjs with
// node:crypto from the steps Cloudflare documents, independently of this package.
type vector struct {
	Input struct {
		Name, AccessKeyID, SecretAccessKey, AccountID, Endpoint, Bucket, Permission string
		Prefixes, Objects, Actions                                                  []string
		TTLSeconds, Now                                                             int64
	}
	Want struct {
		AccessKeyID, SecretAccessKey, SessionToken, JWT string
	}
}

func TestMint_MatchesTheDocumentedSteps(t *testing.T) {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vs {
		in := v.Input
		got, err := r2creds.MintAt(
			r2creds.Parent{AccessKeyID: in.AccessKeyID, SecretAccessKey: in.SecretAccessKey, AccountID: in.AccountID, Endpoint: in.Endpoint},
			r2creds.Scope{Bucket: in.Bucket, Permission: r2creds.Permission(in.Permission), Prefixes: in.Prefixes, Objects: in.Objects, Actions: in.Actions},
			time.Duration(in.TTLSeconds)*time.Second, time.Unix(in.Now, 0))
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
		if got.AccessKeyID != v.Want.AccessKeyID || got.SecretAccessKey != v.Want.SecretAccessKey || got.SessionToken != v.Want.SessionToken {
			t.Errorf("%s:\n got %+v\nwant %+v", in.Name, got, v.Want)
		}
		if !got.Expires.Equal(time.Unix(in.Now+in.TTLSeconds, 0)) {
			t.Errorf("%s: expires %s", in.Name, got.Expires)
		}
		raw, err := base64.StdEncoding.DecodeString(got.SessionToken)
		if err != nil || string(raw) != r2creds.TokenPrefix+v.Want.JWT {
			t.Errorf("%s: token %q does not decode to jwt/ and the JWT", in.Name, raw)
		}
	}
}

// The audience defaults to the account's endpoint host; the claims name the scope.
func TestMint_DefaultEndpointAndClaims(t *testing.T) {
	p := r2creds.Parent{AccessKeyID: "key", SecretAccessKey: "secret", AccountID: "acct"}
	now := time.Unix(1767225600, 0)
	c, err := r2creds.MintAt(p, r2creds.Scope{Bucket: "b", Permission: r2creds.ObjectReadWrite, Prefixes: []string{"users/user_a/"}}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(c.SessionToken)
	parts := strings.Split(strings.TrimPrefix(string(raw), r2creds.TokenPrefix), ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", raw)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bucket":"b","scope":"object-read-write","paths":{"prefixPaths":["users/user_a/"],"objectPaths":[]},"sub":"acct","iss":"key","aud":"acct.r2.cloudflarestorage.com","iat":1767225600,"exp":1767229200}`
	if string(payload) != want {
		t.Fatalf("claims %s\nwant   %s", payload, want)
	}
	if c.AccessKeyID != "key" || len(c.SecretAccessKey) != 64 {
		t.Fatalf("credentials %+v", c)
	}
}

func TestMint_BadInput(t *testing.T) {
	p := r2creds.Parent{AccessKeyID: "key", SecretAccessKey: "secret", AccountID: "acct"}
	s := r2creds.Scope{Bucket: "b", Permission: r2creds.ObjectReadOnly}
	for name, tc := range map[string]struct {
		p   r2creds.Parent
		s   r2creds.Scope
		ttl time.Duration
	}{
		"no key":             {r2creds.Parent{SecretAccessKey: "s", AccountID: "a"}, s, time.Hour},
		"no secret":          {r2creds.Parent{AccessKeyID: "k", AccountID: "a"}, s, time.Hour},
		"no account":         {r2creds.Parent{AccessKeyID: "k", SecretAccessKey: "s"}, s, time.Hour},
		"no bucket":          {p, r2creds.Scope{Permission: r2creds.ObjectReadOnly}, time.Hour},
		"no permission":      {p, r2creds.Scope{Bucket: "b"}, time.Hour},
		"unknown permission": {p, r2creds.Scope{Bucket: "b", Permission: "object-write-only"}, time.Hour},
		"unknown action":     {p, r2creds.Scope{Bucket: "b", Permission: r2creds.ObjectReadOnly, Actions: []string{"PutBucketCors"}}, time.Hour},
		"empty prefix":       {p, r2creds.Scope{Bucket: "b", Permission: r2creds.ObjectReadOnly, Prefixes: []string{""}}, time.Hour},
		"leading slash":      {p, r2creds.Scope{Bucket: "b", Permission: r2creds.ObjectReadOnly, Objects: []string{"/k"}}, time.Hour},
		"zero ttl":           {p, s, 0},
		"ttl past the max":   {p, s, r2creds.MaxTTL + time.Second},
		"fractional ttl":     {p, s, 1500 * time.Millisecond},
		"endpoint sans host": {r2creds.Parent{AccessKeyID: "k", SecretAccessKey: "s", AccountID: "a", Endpoint: "not a url"}, s, time.Hour},
	} {
		if _, err := r2creds.Mint(tc.p, tc.s, tc.ttl); !errors.Is(err, r2creds.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := r2creds.Mint(p, s, r2creds.MaxTTL); err != nil {
		t.Errorf("the maximum ttl: %v", err)
	}
}
