package s3local_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/awsconf"
)

func start(t *testing.T, cfg s3local.Config) *s3local.Server {
	t.Helper()
	srv, err := s3local.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// client is the real SDK client the way tests of the local stack build it, with
// attempts tries per request and no real backoff.
func client(t *testing.T, url string, attempts int, opts ...func(*awshttp.BuildableClient) *awshttp.BuildableClient) *s3.Client {
	t.Helper()
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(url)...)
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = true
		o.Retryer = retry.NewStandard(func(r *retry.StandardOptions) {
			r.MaxAttempts = attempts
			r.MaxBackoff = time.Millisecond
		})
		for _, f := range opts {
			o.HTTPClient = f(o.HTTPClient.(*awshttp.BuildableClient))
		}
	})
}

func put(t *testing.T, c *s3.Client, bucket, key, body string) error {
	t.Helper()
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: &bucket, Key: &key, Body: strings.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
	})
	return err
}

func get(t *testing.T, c *s3.Client, bucket, key string) string {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServer_Start_MemoryServesTheSDK(t *testing.T) {
	srv := start(t, s3local.Config{})
	u, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(u.Host); host != "127.0.0.1" {
		t.Fatalf("listening on %q, want loopback only", u.Host)
	}
	if srv.Bucket() != s3local.DefaultBucket {
		t.Fatalf("bucket %q", srv.Bucket())
	}
	c := client(t, srv.URL(), 1)
	if err := put(t, c, srv.Bucket(), "users/user_a/files/ünï cödé.txt", "hello"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, srv.Bucket(), "users/user_a/files/ünï cödé.txt"); got != "hello" {
		t.Fatalf("got %q", got)
	}
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket()), Prefix: aws.String("users/")})
	if err != nil || len(out.Contents) != 1 {
		t.Fatalf("list: %v %+v", err, out)
	}
	if _, err := c.HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String("missing")}); err == nil {
		t.Fatal("a bucket that was never created exists (auto-creation must be off)")
	}
}

func TestServer_Start_PersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, s3local.Config{Dir: dir, Bucket: "persisted"})
	if err := put(t, client(t, srv.URL(), 1), "persisted", "k", "survives"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv = start(t, s3local.Config{Dir: dir, Bucket: "persisted"})
	if got := get(t, client(t, srv.URL(), 1), "persisted", "k"); got != "survives" {
		t.Fatalf("after restart got %q", got)
	}
}

func TestServer_Start_DirInUse(t *testing.T) {
	dir := t.TempDir()
	start(t, s3local.Config{Dir: dir})
	if srv, err := s3local.Start(s3local.Config{Dir: dir}); err == nil {
		srv.Close()
		t.Fatal("two servers opened one database")
	} else if !strings.Contains(err.Error(), s3local.DBFile) {
		t.Fatalf("error does not name the database: %v", err)
	}
}

func TestServer_Start_AddrInUse(t *testing.T) {
	srv := start(t, s3local.Config{})
	if other, err := s3local.Start(s3local.Config{Addr: strings.TrimPrefix(srv.URL(), "http://")}); err == nil {
		other.Close()
		t.Fatal("listened twice on one address")
	}
}

func TestServer_Close_Twice(t *testing.T) {
	srv, err := s3local.Start(s3local.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFaults_Inject_CountedFailuresAreRetried(t *testing.T) {
	srv := start(t, s3local.Config{})
	if err := srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError, Count: 2}); err != nil {
		t.Fatal(err)
	}
	if err := put(t, client(t, srv.URL(), 3), srv.Bucket(), "k", "v"); err != nil {
		t.Fatalf("three tries did not get past two failures: %v", err)
	}
	if n := srv.Faults.Injected(); n != 2 {
		t.Fatalf("injected %d faults, want 2", n)
	}
	if n := srv.Faults.Requests(http.MethodPut); n != 3 {
		t.Fatalf("%d PUTs, want 3", n)
	}
}

func TestFaults_Inject_StatusReachesTheClient(t *testing.T) {
	srv := start(t, s3local.Config{})
	c := client(t, srv.URL(), 1)
	if err := srv.Faults.Inject(s3local.Fault{Status: http.StatusServiceUnavailable}); err != nil {
		t.Fatal(err)
	}
	err := put(t, c, srv.Bucket(), "k", "v")
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("want a 503, got %v", err)
	}
	srv.Faults.Clear()
	if err := put(t, c, srv.Bucket(), "k", "v"); err != nil {
		t.Fatalf("after Clear: %v", err)
	}
}

func TestFaults_Inject_MethodFilter(t *testing.T) {
	srv := start(t, s3local.Config{})
	c := client(t, srv.URL(), 1)
	if err := put(t, c, srv.Bucket(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, srv.Bucket(), "k"); got != "v" {
		t.Fatalf("GET was disturbed: %q", got)
	}
	if err := put(t, c, srv.Bucket(), "k", "w"); err == nil {
		t.Fatal("PUT was not failed")
	}
	if got := get(t, c, srv.Bucket(), "k"); got != "v" {
		t.Fatalf("a failed PUT changed the object: %q", got)
	}
}

func TestFaults_Inject_LatencyTripsHeaderTimeout(t *testing.T) {
	srv := start(t, s3local.Config{})
	short := func(c *awshttp.BuildableClient) *awshttp.BuildableClient {
		return c.WithTransportOptions(func(tr *http.Transport) { tr.ResponseHeaderTimeout = 500 * time.Millisecond })
	}
	c := client(t, srv.URL(), 1, short)
	if err := srv.Faults.Inject(s3local.Fault{Method: http.MethodGet, Latency: 5 * time.Second, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("k")})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("want a response header timeout, got %v", err)
	}
	// The delayed request gave up when the client hung up; the fault is spent.
	_, err = c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("k")})
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusNotFound {
		t.Fatalf("second GET: want 404 for a missing key, got %v", err)
	}
}

func TestFaults_Inject_FractionIsSeeded(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	pattern := func(seed uint64) string {
		f := s3local.NewFaults(ok, seed)
		if err := f.Inject(s3local.Fault{Status: http.StatusInternalServerError, Fraction: 0.3}); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for range 1000 {
			rec := httptest.NewRecorder()
			f.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/b/k", nil))
			b.WriteByte(byte('0' + rec.Code/100))
		}
		return b.String()
	}
	a, b := pattern(7), pattern(7)
	if a != b {
		t.Fatal("one seed gave two different fault patterns")
	}
	if a == pattern(8) {
		t.Fatal("the seed does not matter")
	}
	if n := strings.Count(a, "5"); n < 200 || n > 400 {
		t.Fatalf("fraction 0.3 failed %d of 1000 requests", n)
	}
}

func TestFaults_Inject_BadFault(t *testing.T) {
	f := s3local.NewFaults(http.NotFoundHandler(), 1)
	for _, ft := range []s3local.Fault{
		{},
		{Status: 200},
		{Status: 500, Fraction: 1.5},
		{Status: 500, Count: -1},
		{Latency: -time.Second},
	} {
		if err := f.Inject(ft); err == nil {
			t.Errorf("accepted %+v", ft)
		}
	}
}
