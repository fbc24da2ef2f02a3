package auth_test

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
	"github.com/sandgate/sandgate/internal/userid"
)

const (
	secretA = "first-secret-that-is-at-least-32-bytes"
	secretB = "rotated-out-secret-still-listed-32b+"
	secretX = "unknown-secret-nobody-configured-32b+"
)

var now = time.Unix(1_800_000_000, 0)

type vector struct {
	Secret string `json:"secret"`
	UserID string `json:"userId"`
	Exp    int64  `json:"exp"`
	Sig    string `json:"sig"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile("../../sdk/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return f.Vectors
}

func TestSignature_Vectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		if got := auth.Signature([]byte(v.Secret), v.UserID, v.Exp); got != v.Sig {
			t.Errorf("Signature(%q, %d) = %s, want %s", v.UserID, v.Exp, got, v.Sig)
		}
	}
}

func TestVerifier_Verify_Vectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		ver, err := auth.NewVerifier([]string{v.Secret})
		if err != nil {
			t.Fatal(err)
		}
		ver.Now = func() time.Time { return time.Unix(v.Exp-60, 0) }
		if err := ver.Verify(v.UserID, strconv.FormatInt(v.Exp, 10), v.Sig); err != nil {
			t.Errorf("vector %s.%d: %v", v.UserID, v.Exp, err)
		}
	}
}

func newVerifier(t *testing.T) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier([]string{secretA, secretB})
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	return v
}

// query builds a query the way a browser sends it, signed with secret.
func query(secret, userID string, exp int64) url.Values {
	return url.Values{
		"userId": {userID},
		"exp":    {strconv.FormatInt(exp, 10)},
		"sig":    {auth.Signature([]byte(secret), userID, exp)},
	}
}

func TestVerifier_VerifyQuery(t *testing.T) {
	valid := now.Add(5 * time.Minute).Unix()
	with := func(q url.Values, f func(url.Values)) url.Values { f(q); return q }

	tests := []struct {
		name string
		q    url.Values
		want error
	}{
		{"valid", query(secretA, "user_abc", valid), nil},
		{"rotated-out secret still listed", query(secretB, "user_abc", valid), nil},
		{"within clock skew after exp", query(secretA, "user_abc", now.Add(-10*time.Second).Unix()), nil},
		{"at maximum lifetime", query(secretA, "user_abc", now.Add(auth.DefaultMaxLifetime).Unix()), nil},

		{"forged signature", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("sig", strings.Repeat("A", 43))
		}), auth.ErrBadSignature},
		{"unknown secret", query(secretX, "user_abc", valid), auth.ErrBadSignature},
		{"expired", query(secretA, "user_abc", now.Add(-time.Minute).Unix()), auth.ErrExpired},
		{"beyond maximum lifetime", query(secretA, "user_abc", now.Add(time.Hour).Unix()), auth.ErrTooFarAhead},
		{"tampered userId", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("userId", "user_abd")
		}), auth.ErrBadSignature},
		{"tampered exp", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("exp", strconv.FormatInt(valid+1, 10))
		}), auth.ErrBadSignature},
		{"upper-case variant of a signed id", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("userId", "user_ABC")
		}), auth.ErrBadSignature},
		{"lower-case variant of a signed id", with(query(secretA, "user_ABC", valid), func(q url.Values) {
			q.Set("userId", "user_abc")
		}), auth.ErrBadSignature},
		{"upper-case prefix", query(secretA, "USER_abc", valid), auth.ErrBadUserID},
		{"path traversal", query(secretA, "user_a/../user_b", valid), auth.ErrBadUserID},
		{"bare prefix", query(secretA, "user_", valid), auth.ErrBadUserID},
		{"65 characters", query(secretA, "user_"+strings.Repeat("a", 65), valid), auth.ErrBadUserID},
		{"10 KB userId", query(secretA, "user_"+strings.Repeat("a", 10<<10), valid), auth.ErrBadUserID},
		{"non-ASCII", query(secretA, "user_ābc", valid), auth.ErrBadUserID},
		{"fullwidth digit", query(secretA, "user_１", valid), auth.ErrBadUserID},
		{"NUL byte", query(secretA, "user_a\x00", valid), auth.ErrBadUserID},
		{"missing userId", with(query(secretA, "user_abc", valid), func(q url.Values) { q.Del("userId") }), auth.ErrMalformed},
		{"missing exp", with(query(secretA, "user_abc", valid), func(q url.Values) { q.Del("exp") }), auth.ErrMalformed},
		{"missing sig", with(query(secretA, "user_abc", valid), func(q url.Values) { q.Del("sig") }), auth.ErrMalformed},
		{"duplicated userId", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Add("userId", "user_other")
		}), auth.ErrMalformed},
		{"duplicated sig", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Add("sig", q.Get("sig"))
		}), auth.ErrMalformed},
		{"exp with sign", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("exp", "+"+q.Get("exp"))
		}), auth.ErrMalformed},
		{"exp not a number", with(query(secretA, "user_abc", valid), func(q url.Values) { q.Set("exp", "soon") }), auth.ErrMalformed},
		{"exp overflow", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("exp", strings.Repeat("9", 40))
		}), auth.ErrMalformed},
		{"padded signature", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("sig", q.Get("sig")+"=")
		}), auth.ErrMalformed},
		{"standard base64 signature", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("sig", strings.NewReplacer("-", "+", "_", "/").Replace(q.Get("sig"))+"+")
		}), auth.ErrMalformed},
		{"truncated signature", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("sig", q.Get("sig")[:20])
		}), auth.ErrMalformed},
		{"signature with a newline", with(query(secretA, "user_abc", valid), func(q url.Values) {
			q.Set("sig", q.Get("sig")[:8]+"\n"+q.Get("sig")[8:])
		}), auth.ErrMalformed},
		{"empty values", url.Values{"userId": {""}, "exp": {""}, "sig": {""}}, auth.ErrBadUserID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := newVerifier(t).VerifyQuery(tt.q)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyQuery: %v", err)
				}
				if user != tt.q.Get("userId") {
					t.Fatalf("user = %q, want %q", user, tt.q.Get("userId"))
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyQuery error = %v, want %v", err, tt.want)
			}
			if user != "" {
				t.Fatalf("refused query returned user %q", user)
			}
		})
	}
}

func TestVerifier_MaxLifetime_Configurable(t *testing.T) {
	v := newVerifier(t)
	v.MaxLifetime = time.Hour
	if _, err := v.VerifyQuery(query(secretA, "user_abc", now.Add(50*time.Minute).Unix())); err != nil {
		t.Fatalf("50 min ahead with 1 h lifetime: %v", err)
	}
	v.MaxLifetime = time.Minute
	if _, err := v.VerifyQuery(query(secretA, "user_abc", now.Add(5*time.Minute).Unix())); !errors.Is(err, auth.ErrTooFarAhead) {
		t.Fatalf("5 min ahead with 1 min lifetime: %v", err)
	}
}

func TestNewVerifier_FailsClosed(t *testing.T) {
	if _, err := auth.NewVerifier(nil); !errors.Is(err, auth.ErrNoSecret) {
		t.Errorf("no secrets: %v", err)
	}
	if _, err := auth.NewVerifier([]string{secretA, "short"}); !errors.Is(err, auth.ErrWeakSecret) {
		t.Errorf("one short secret: %v", err)
	}
}

func TestParseSecrets(t *testing.T) {
	got, err := auth.ParseSecrets(" " + secretA + " ,," + secretB + "\n")
	if err != nil || len(got) != 2 || got[0] != secretA || got[1] != secretB {
		t.Fatalf("ParseSecrets = %q, %v", got, err)
	}
	for _, in := range []string{"", " , ", "\t"} {
		if _, err := auth.ParseSecrets(in); !errors.Is(err, auth.ErrNoSecret) {
			t.Errorf("ParseSecrets(%q) = %v, want ErrNoSecret", in, err)
		}
	}
	_, err = auth.ParseSecrets(secretA + ",tooshort")
	if !errors.Is(err, auth.ErrWeakSecret) {
		t.Fatalf("weak secret: %v", err)
	}
	if strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("error reveals the secret: %v", err)
	}
}

func TestSigner_SignURL_RoundTrip(t *testing.T) {
	s, err := auth.NewSigner(secretA)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return now }
	raw, err := s.SignURL("wss://api.example.com/prod", "user_Zz9")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Host != "api.example.com" || u.Path != "/prod" {
		t.Fatalf("url = %s", raw)
	}
	if got := u.Query().Get("exp"); got != strconv.FormatInt(now.Add(auth.DefaultTTL).Unix(), 10) {
		t.Fatalf("exp = %s", got)
	}
	user, err := newVerifier(t).VerifyQuery(u.Query())
	if err != nil || user != "user_Zz9" {
		t.Fatalf("VerifyQuery = %q, %v", user, err)
	}
}

func TestSigner_Sign_BadInput(t *testing.T) {
	if _, err := auth.NewSigner("short"); !errors.Is(err, auth.ErrWeakSecret) {
		t.Fatalf("short secret: %v", err)
	}
	s, _ := auth.NewSigner(secretA)
	if _, err := s.Sign("user_a/../b"); !errors.Is(err, auth.ErrBadUserID) {
		t.Fatalf("bad id: %v", err)
	}
}

func BenchmarkVerifier_VerifyQuery(b *testing.B) {
	v, _ := auth.NewVerifier([]string{secretA, secretB})
	v.Now = func() time.Time { return now }
	q := query(secretB, "user_abc", now.Add(5*time.Minute).Unix()) // worst case: last key
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyQuery(q); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}

func FuzzVerifier_Verify(f *testing.F) {
	exp := now.Add(time.Minute).Unix()
	f.Add("user_abc", strconv.FormatInt(exp, 10), auth.Signature([]byte(secretA), "user_abc", exp))
	f.Add("user_", "0", "")
	f.Add("user_a/../user_b", "99999999999", "AAAA")
	f.Add("user_ā", "-1", "====")
	f.Add(strings.Repeat("u", 300), "1e9", strings.Repeat("_", 43))
	f.Fuzz(func(t *testing.T, userID, exp, sig string) {
		v, _ := auth.NewVerifier([]string{secretA, secretB})
		v.Now = func() time.Time { return now }
		err := v.Verify(userID, exp, sig)
		if err == nil {
			// Anything accepted must really be signed by one of our keys.
			n, perr := strconv.ParseInt(exp, 10, 64)
			if perr != nil || !userid.Valid(userID) ||
				(sig != auth.Signature([]byte(secretA), userID, n) && sig != auth.Signature([]byte(secretB), userID, n)) {
				t.Fatalf("accepted unsigned input %q %q %q", userID, exp, sig)
			}
		}
	})
}
