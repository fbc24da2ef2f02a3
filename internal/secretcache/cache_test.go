package secretcache_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/secretcache"
)

// fixture is the local Secrets Manager behind a proxy that can cut the network, and a
// client of it that counts its calls.
type fixture struct {
	srv   *secretslocal.Server
	proxy *testkit.Proxy
	api   *counting
	clock *testkit.Clock
}

type counting struct {
	secretcache.API
	calls atomic.Int64
}

func (c *counting) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, o ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.calls.Add(1)
	return c.API.GetSecretValue(ctx, in, o...)
}

func start(t *testing.T) *fixture {
	t.Helper()
	a := identity.New("000000000000", "us-east-1")
	if _, err := a.AddRole(identity.Role{Name: "fn"}); err != nil {
		t.Fatal(err)
	}
	creds, _, err := a.Issue(identity.SessionSpec{RoleARN: a.RoleARN("fn"), SessionName: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: secretslocal.New(a, nil, nil), clock: testkit.NewClock()}
	hs := httptest.NewServer(f.srv)
	t.Cleanup(hs.Close)
	f.proxy = testkit.NewProxy(t, hs.URL)
	f.api = &counting{API: secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.proxy.URL),
		Retryer:     aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)})}
	return f
}

const (
	first  = "first-secret-value-of-forty-bytes-long!!"
	second = "second-secret-value-of-forty-bytes-long!"
)

func parseLen(s string) (string, error) {
	if len(s) < 32 {
		return "", errors.New("shorter than 32 bytes")
	}
	return s, nil
}

func (f *fixture) cache(id string) *secretcache.Cache[string] {
	return &secretcache.Cache[string]{API: f.api, SecretID: id, Parse: parseLen, Now: f.clock.Now,
		Refresh: time.Minute, MaxStale: 10 * time.Minute, RetryAfter: 5 * time.Second}
}

func get(t *testing.T, c *secretcache.Cache[string]) string {
	t.Helper()
	v, err := c.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A value is read once per Refresh, and a rotation is seen at the first read after it.
func TestCache_Get_RereadsAfterRefresh(t *testing.T) {
	f := start(t)
	if _, err := f.srv.Put("app/signing", first); err != nil {
		t.Fatal(err)
	}
	c := f.cache("app/signing")
	for range 5 {
		if got := get(t, c); got != first {
			t.Fatalf("got %q", got)
		}
	}
	if n := f.api.calls.Load(); n != 1 {
		t.Fatalf("%d reads within the refresh interval, want 1", n)
	}
	if _, err := f.srv.Put("app/signing", second); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(59 * time.Second)
	if got := get(t, c); got != first {
		t.Fatalf("rotation seen before the refresh interval: %q", got)
	}
	f.clock.Advance(time.Second)
	if got := get(t, c); got != second {
		t.Fatalf("after the refresh interval got %q, want the rotated value", got)
	}
	if n := f.api.calls.Load(); n != 2 {
		t.Fatalf("%d reads, want 2", n)
	}
}

// While Secrets Manager cannot be reached, the value held is used for MaxStale and no
// longer; reads are retried every RetryAfter, not on every Get; once it answers, the
// current value is used again.
func TestCache_Get_StaleWithinBoundWhenUnreachable(t *testing.T) {
	f := start(t)
	if _, err := f.srv.Put("app/signing", first); err != nil {
		t.Fatal(err)
	}
	c := f.cache("app/signing")
	get(t, c)
	f.proxy.Cut(true)
	f.clock.Advance(time.Minute)
	if got := get(t, c); got != first {
		t.Fatalf("got %q while unreachable, want the held value", got)
	}
	calls := f.api.calls.Load()
	for range 10 {
		get(t, c)
	}
	if n := f.api.calls.Load(); n != calls {
		t.Fatalf("%d reads within RetryAfter of a failure, want none", n-calls)
	}
	f.clock.Advance(10*time.Minute - time.Minute) // the value is MaxStale old
	_, err := c.Get(context.Background())
	if !errors.Is(err, secretcache.ErrUnavailable) {
		t.Fatalf("past MaxStale: err %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), first) {
		t.Fatal("the error carries the secret")
	}
	f.proxy.Cut(false)
	f.clock.Advance(5 * time.Second)
	if got := get(t, c); got != first {
		t.Fatalf("after the network came back: %q", got)
	}
}

// A rotation to a value that does not parse keeps the previous one (within MaxStale),
// and the error says so without the value.
func TestCache_Get_BadRotationKeepsPrevious(t *testing.T) {
	f := start(t)
	if _, err := f.srv.Put("app/signing", first); err != nil {
		t.Fatal(err)
	}
	c := f.cache("app/signing")
	get(t, c)
	if _, err := f.srv.Put("app/signing", "too-short-a-secret"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	if got := get(t, c); got != first {
		t.Fatalf("after a bad rotation got %q, want the previous value", got)
	}
	f.clock.Advance(10 * time.Minute)
	_, err := c.Get(context.Background())
	if !errors.Is(err, secretcache.ErrUnavailable) || strings.Contains(err.Error(), "too-short") || !strings.Contains(err.Error(), "shorter than 32") {
		t.Fatalf("err %v: want ErrUnavailable naming the parse failure, never the value", err)
	}
}

// No value at all (a missing secret) is an error at the first Get.
func TestCache_Get_MissingSecret(t *testing.T) {
	f := start(t)
	_, err := f.cache("app/none").Get(context.Background())
	if !errors.Is(err, secretcache.ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
}

// Concurrent Gets across a rotation see one value or the other, never a torn one, and
// read the secret once per refresh.
func TestCache_Get_Concurrent(t *testing.T) {
	f := start(t)
	if _, err := f.srv.Put("app/signing", first); err != nil {
		t.Fatal(err)
	}
	c := f.cache("app/signing")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			for j := range 20 {
				if i == 0 && j == 10 {
					if _, err := f.srv.Put("app/signing", second); err != nil {
						t.Error(err)
					}
					f.clock.Advance(time.Minute)
				}
				v, err := c.Get(context.Background())
				if err != nil || (v != first && v != second) {
					t.Errorf("got %q, %v", v, err)
				}
			}
		})
	}
	wg.Wait()
	if n := f.api.calls.Load(); n != 2 {
		t.Fatalf("%d reads, want 2 (one per refresh)", n)
	}
}

// Credentials hands an SDK client the stored keys with an expiry at the next refresh,
// so the SDK asks again and a rotated key signs the next requests.
func TestCredentials_Retrieve_FollowsRotation(t *testing.T) {
	f := start(t)
	if _, err := f.srv.Put("app/r2", `{"accessKeyId":"AKIDFIRST","secretAccessKey":"first-secret"}`); err != nil {
		t.Fatal(err)
	}
	keys := &secretcache.Cache[secretcache.Keys]{API: f.api, SecretID: "app/r2", Parse: secretcache.ParseKeys, Now: f.clock.Now, Refresh: time.Minute}
	p := &secretcache.Credentials{Cache: keys}
	cr, err := p.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cr.AccessKeyID != "AKIDFIRST" || !cr.CanExpire || !cr.Expires.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("got %+v", cr)
	}
	if _, err := f.srv.Put("app/r2", `{"accessKeyId":"AKIDSECOND","secretAccessKey":"second-secret"}`); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	if cr, err = p.Retrieve(context.Background()); err != nil || cr.AccessKeyID != "AKIDSECOND" {
		t.Fatalf("after rotation: %+v, %v", cr, err)
	}
	// An SDK client takes it as its credentials provider.
	_ = s3.New(s3.Options{Region: "auto", Credentials: p})
	for _, bad := range []string{`{"accessKeyId":"only"}`, `not json`} {
		if _, err := secretcache.ParseKeys(bad); err == nil || strings.Contains(err.Error(), "only") {
			t.Errorf("ParseKeys(%q): %v", bad, err)
		}
	}
}
