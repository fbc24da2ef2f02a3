package s3bucket_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// recorder keeps what arrived on the wire, before gofakes3 sees it.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.mu.Unlock()
	r.next.ServeHTTP(w, req)
}

func (r *recorder) requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.reqs...)
}

type env struct {
	srv    *s3local.Server
	rec    *recorder
	cfg    aws.Config // from awsconf.Load, trusting the test certificate under TLS
	bucket *s3bucket.Bucket
}

// fastRetries keeps the retry tests quick: real backoff, millisecond scale.
var fastRetries = s3bucket.Options{UsePathStyle: true, MaxBackoff: 5 * time.Millisecond}

// newEnv serves gofakes3 (through the recorder) over plain HTTP, or over TLS with an
// httptest certificate, and returns a Bucket built the production way:
// awsconf.Load, then NewClient.
func newEnv(t *testing.T, tls bool, o s3bucket.Options) *env {
	t.Helper()
	srv, err := s3local.Start(s3local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rec := &recorder{next: srv.Handler()}
	ts := httptest.NewUnstartedServer(rec)
	if tls {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(ts.URL)...)
	if err != nil {
		t.Fatal(err)
	}
	if tls {
		trust := ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		cfg.HTTPClient = cfg.HTTPClient.(*awshttp.BuildableClient).WithTransportOptions(func(tr *http.Transport) {
			tr.TLSClientConfig = trust
		})
	}
	return &env{srv: srv, rec: rec, cfg: cfg, bucket: s3bucket.New(s3bucket.NewClient(cfg, o), srv.Bucket())}
}

func put(t *testing.T, b objsync.Bucket, key, body string, meta map[string]string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(body))
	etag, err := b.Put(context.Background(), objsync.PutInput{
		Key: key, Body: strings.NewReader(body), Size: int64(len(body)), Meta: meta, SHA256: sum[:],
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return etag
}

func get(t *testing.T, b objsync.Bucket, key string) (objsync.ObjectInfo, string) {
	t.Helper()
	info, body, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return info, string(data)
}

func TestBucket_PutGet_MetadataAndBytes(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	meta := map[string]string{"mode": "0640", "mtime": "1700000000.000000001", "sha256": strings.Repeat("ab", 32), "type": "file"}
	etag := put(t, e.bucket, "users/user_a/files/dïr/a b+c%.txt", "hello\x00world", meta)
	info, body := get(t, e.bucket, "users/user_a/files/dïr/a b+c%.txt")
	if body != "hello\x00world" || info.Size != 11 || info.ETag != etag || etag == "" || strings.Contains(etag, `"`) {
		t.Fatalf("got %q size %d etag %q (put said %q)", body, info.Size, info.ETag, etag)
	}
	for k, v := range meta {
		if info.Meta[k] != v {
			t.Errorf("meta %s = %q, want %q", k, info.Meta[k], v)
		}
	}
	for _, r := range e.rec.requests() {
		if !strings.HasPrefix(r.URL.Path, "/"+e.srv.Bucket()+"/") {
			t.Errorf("%s %s is not path-style", r.Method, r.URL.Path)
		}
	}
}

// Over plain HTTP the SDK would read the whole body to hash it before sending it; the
// hash the caller gives is used instead. A deliberately different hash shows which one
// went out (gofakes3 does not check it; S3 would refuse the mismatch).
func TestBucket_Put_SignsWithTheGivenHash(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	given := sha256.Sum256([]byte("not the payload"))
	_, err := e.bucket.Put(context.Background(), objsync.PutInput{
		Key: "k", Body: strings.NewReader("payload"), Size: 7, SHA256: given[:],
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := e.rec.requests()
	if got := reqs[len(reqs)-1].Header.Get("X-Amz-Content-Sha256"); got != hex.EncodeToString(given[:]) {
		t.Fatalf("x-amz-content-sha256 %q: the SDK hashed the body itself", got)
	}
}

func TestBucket_Get_Missing(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	if _, _, err := e.bucket.Get(context.Background(), "nope"); !errors.Is(err, objsync.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
}

func TestBucket_List_NoSuchBucket(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	other := s3bucket.New(s3bucket.NewClient(e.cfg, s3bucket.Options{UsePathStyle: true}), "never-created")
	if _, err := other.List(context.Background(), "users/", ""); !errors.Is(err, objsync.ErrNoBucket) {
		t.Fatalf("want ErrNoBucket, got %v", err)
	}
}

func TestBucket_List_Pages(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	for i := range 5 {
		put(t, e.bucket, fmt.Sprintf("p/q/%d", i), "x", nil)
	}
	put(t, e.bucket, "p/other", "x", nil)
	e.bucket.PageSize = 2
	var keys []string
	token, pages := "", 0
	for {
		page, err := e.bucket.List(context.Background(), "p/q/", token)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page.Objects {
			keys = append(keys, o.Key)
			if o.Size != 1 || o.ETag == "" {
				t.Errorf("%s: size %d etag %q", o.Key, o.Size, o.ETag)
			}
		}
		if page.Next == "" {
			break
		}
		token = page.Next
	}
	if strings.Join(keys, ",") != "p/q/0,p/q/1,p/q/2,p/q/3,p/q/4" || pages < 3 {
		t.Fatalf("%d pages: %v", pages, keys)
	}
}

func TestBucket_Delete_FullBatch(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true})
	keys := make([]string, objsync.MaxDeleteBatch)
	for i := range keys {
		keys[i] = fmt.Sprintf("d/%04d", i)
		if i%100 == 0 {
			put(t, e.bucket, keys[i], "x", nil) // the rest do not exist: still "deleted"
		}
	}
	if err := e.bucket.Delete(context.Background(), keys); err != nil {
		t.Fatal(err)
	}
	page, err := e.bucket.List(context.Background(), "d/", "")
	if err != nil || len(page.Objects) != 0 {
		t.Fatalf("left %d objects (%v)", len(page.Objects), err)
	}
	if err := e.bucket.Delete(context.Background(), append(keys, "one-too-many")); err == nil {
		t.Fatal("accepted more than MaxDeleteBatch keys")
	}
}

func TestBucket_Put_RetriesServerErrors(t *testing.T) {
	e := newEnv(t, false, fastRetries)
	if err := e.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError, Count: 2}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusServiceUnavailable, Count: 2}); err != nil {
		t.Fatal(err)
	}
	put(t, e.bucket, "k", "after four failures", nil)
	if _, body := get(t, e.bucket, "k"); body != "after four failures" {
		t.Fatalf("got %q", body)
	}
	if n := e.srv.Faults.Requests(http.MethodPut); n != 5 {
		t.Fatalf("%d PUTs, want 5 (four failed, then one through)", n)
	}
}

func TestBucket_Get_RetriesSlowResponses(t *testing.T) {
	// The timeout is longer than a stall of a loaded machine, so the answer that is
	// not delayed is never abandoned too; the delay outlasts any test, so the delayed
	// ones always are (they end when the client abandons them).
	o := fastRetries
	o.ResponseHeaderTimeout = 3 * time.Second
	e := newEnv(t, false, o)
	put(t, e.bucket, "k", "v", nil)
	if err := e.srv.Faults.Inject(s3local.Fault{Method: http.MethodGet, Latency: time.Hour, Count: 2}); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, e.bucket, "k"); body != "v" {
		t.Fatalf("got %q", body)
	}
	if n := e.srv.Faults.Requests(http.MethodGet); n != 3 {
		t.Fatalf("%d GETs, want 3 (two abandoned as slow)", n)
	}
}

func TestBucket_Put_GivesUpAfterMaxAttempts(t *testing.T) {
	o := fastRetries
	o.MaxAttempts = 3
	e := newEnv(t, false, o)
	if err := e.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	_, err := e.bucket.Put(context.Background(), objsync.PutInput{Key: "k", Body: strings.NewReader("v"), Size: 1})
	if err == nil {
		t.Fatal("put succeeded against a store that always fails")
	}
	if n := e.srv.Faults.Requests(http.MethodPut); n != 3 {
		t.Fatalf("%d PUTs, want MaxAttempts = 3", n)
	}
}

func TestBucket_Put_Denied(t *testing.T) {
	e := newEnv(t, false, fastRetries)
	if err := e.srv.Faults.Inject(s3local.Fault{Status: http.StatusForbidden}); err != nil {
		t.Fatal(err)
	}
	_, err := e.bucket.Put(context.Background(), objsync.PutInput{Key: "k", Body: strings.NewReader("v"), Size: 1})
	if !errors.Is(err, objsync.ErrDenied) {
		t.Fatalf("want ErrDenied, got %v", err)
	}
}

// refusingBody fails on its last read with an error that says "do not retry", as
// objsync's reader does when a file changes during an upload.
type refusingBody struct{ *bytes.Reader }

type noRetry struct{}

func (noRetry) Error() string        { return "changed" }
func (noRetry) RetryableError() bool { return false }

func (b refusingBody) Read(p []byte) (int, error) {
	if b.Len() <= len(p) {
		return 0, noRetry{}
	}
	return b.Reader.Read(p)
}

func TestBucket_Put_BodyErrorIsNotRetriedNorStored(t *testing.T) {
	e := newEnv(t, false, fastRetries)
	body := bytes.Repeat([]byte("x"), 1<<20)
	_, err := e.bucket.Put(context.Background(), objsync.PutInput{
		Key: "k", Body: refusingBody{bytes.NewReader(body)}, Size: int64(len(body)), SHA256: make([]byte, 32),
	})
	if !errors.As(err, new(noRetry)) {
		t.Fatalf("want the body's error, got %v", err)
	}
	if n := e.srv.Faults.Requests(http.MethodPut); n > 1 {
		t.Fatalf("%d PUTs: the body's refusal was retried", n)
	}
	if _, _, err := e.bucket.Get(context.Background(), "k"); !errors.Is(err, objsync.ErrNotFound) {
		t.Fatalf("a truncated body was stored: %v", err)
	}
}

// Over HTTPS the SDK's default (WhenSupported) sends aws-chunked bodies with CRC32
// trailers, which gofakes3 stores as data and R2 rejects. The first subtest shows the
// check below would see that; the second holds NewClient to "only when required".
func TestNewClient_HTTPS_ChecksumsOnlyWhenRequired(t *testing.T) {
	t.Run("control: the SDK default is caught", func(t *testing.T) {
		e := newEnv(t, true, s3bucket.Options{UsePathStyle: true})
		cfg := e.cfg.Copy()
		cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenSupported
		raw := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
		_, err := raw.PutObject(context.Background(), &s3.PutObjectInput{
			Bucket: aws.String(e.srv.Bucket()), Key: aws.String("k"), Body: strings.NewReader("11 bytes!!!"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if bad := checksumHeaders(e.rec.requests()); len(bad) == 0 {
			t.Fatal("the default client sent no checksum headers: this test could not catch a regression")
		}
	})
	t.Run("NewClient", func(t *testing.T) {
		e := newEnv(t, true, s3bucket.Options{UsePathStyle: true})
		body := strings.Repeat("0123456789", 100_000)
		put(t, e.bucket, "k", body, map[string]string{"type": "file"})
		if _, got := get(t, e.bucket, "k"); got != body {
			t.Fatalf("round trip over HTTPS changed the object: %d bytes back, %d sent", len(got), len(body))
		}
		if err := e.bucket.Delete(context.Background(), []string{"k", "j"}); err != nil {
			t.Fatal(err)
		}
		if bad := checksumHeaders(e.rec.requests()); len(bad) > 0 {
			t.Fatalf("checksum headers sent: %v", bad)
		}
		var sawDelete bool
		for _, r := range e.rec.requests() {
			if r.Method == http.MethodPost && r.URL.Query().Has("delete") {
				sawDelete = true
				if r.Header.Get("Content-MD5") == "" {
					t.Error("DeleteObjects without Content-MD5")
				}
			}
		}
		if !sawDelete {
			t.Fatal("no DeleteObjects request recorded")
		}
	})
}

// checksumHeaders lists the flexible-checksum and aws-chunked traces in requests.
func checksumHeaders(reqs []*http.Request) []string {
	var bad []string
	for _, r := range reqs {
		for name, v := range r.Header {
			l := strings.ToLower(name)
			if strings.HasPrefix(l, "x-amz-checksum-") || l == "x-amz-sdk-checksum-algorithm" || l == "x-amz-trailer" ||
				l == "content-encoding" && strings.Contains(strings.Join(v, ","), "aws-chunked") {
				bad = append(bad, r.Method+" "+name)
			}
		}
	}
	return bad
}

// R2 signs with region "auto"; the SDK must accept it and sign the scope with it.
func TestNewClient_RegionAuto(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true, Region: "auto"})
	put(t, e.bucket, "k", "v", nil)
	if _, body := get(t, e.bucket, "k"); body != "v" {
		t.Fatalf("got %q", body)
	}
	for _, r := range e.rec.requests() {
		if auth := r.Header.Get("Authorization"); !strings.Contains(auth, "/auto/s3/aws4_request") {
			t.Fatalf("%s signed outside region auto: %q", r.Method, auth[:min(len(auth), 80)])
		}
	}
}

func TestLoadOptions_ReadsStorageSettings(t *testing.T) {
	env := config.New(config.Map(map[string]string{
		s3bucket.EnvRegion: "auto", s3bucket.EnvPathStyle: "true",
		s3bucket.EnvAccessKeyID: "r2-key-id", s3bucket.EnvSecretAccessKey: "r2-secret",
	}))
	got := s3bucket.LoadOptions(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if got.Region != "auto" || !got.UsePathStyle || got.AccessKeyID != "r2-key-id" || got.SecretAccessKey != "r2-secret" {
		t.Fatalf("%+v", got)
	}
}

func TestLoadOptions_BadInput(t *testing.T) {
	env := config.New(config.Map(map[string]string{s3bucket.EnvPathStyle: "maybe", s3bucket.EnvAccessKeyID: "only-half"}))
	s3bucket.LoadOptions(env)
	err := env.Err()
	if err == nil || !strings.Contains(err.Error(), s3bucket.EnvPathStyle) || !strings.Contains(err.Error(), s3bucket.EnvSecretAccessKey) {
		t.Fatalf("want both problems reported, got %v", err)
	}
	if strings.Contains(err.Error(), "only-half") {
		t.Fatalf("error echoes a credential: %v", err)
	}
}

// Store keys (R2) sign the store's requests; the process's own credentials do not.
func TestNewClient_StoreCredentials(t *testing.T) {
	e := newEnv(t, false, s3bucket.Options{UsePathStyle: true, AccessKeyID: "R2KEYID", SecretAccessKey: "r2-secret"})
	put(t, e.bucket, "k", "v", nil)
	for _, r := range e.rec.requests() {
		if auth := r.Header.Get("Authorization"); !strings.Contains(auth, "Credential=R2KEYID/") {
			t.Fatalf("%s not signed with the store's key: %q", r.Method, auth[:min(len(auth), 60)])
		}
	}
}

// Conditional writes reach the store as S3 writes them (If-Match with the quoted ETag,
// If-None-Match: *), and a refusal is objsync.ErrPrecondition with nothing written.
func TestBucket_Put_Conditions(t *testing.T) {
	e := newEnv(t, false, fastRetries)
	putIf := func(key, body string, set func(*objsync.PutInput)) (string, error) {
		in := objsync.PutInput{Key: key, Body: strings.NewReader(body), Size: int64(len(body))}
		set(&in)
		return e.bucket.Put(context.Background(), in)
	}
	none := func(in *objsync.PutInput) { in.IfNoneMatch = true }
	match := func(etag string) func(*objsync.PutInput) { return func(in *objsync.PutInput) { in.IfMatch = etag } }

	first, err := putIf("k", "first", none)
	if err != nil {
		t.Fatalf("If-None-Match on a new key: %v", err)
	}
	if _, err := putIf("k", "second", none); !errors.Is(err, objsync.ErrPrecondition) {
		t.Fatalf("If-None-Match on an existing key: %v, want ErrPrecondition", err)
	}
	if _, err := putIf("k", "second", match("0123456789abcdef0123456789abcdef")); !errors.Is(err, objsync.ErrPrecondition) {
		t.Fatalf("If-Match another ETag: %v, want ErrPrecondition", err)
	}
	if _, err := putIf("missing", "x", match(first)); !errors.Is(err, objsync.ErrPrecondition) {
		t.Fatalf("If-Match on a missing key: %v, want ErrPrecondition", err)
	}
	if _, body := get(t, e.bucket, "k"); body != "first" {
		t.Fatalf("after refusals: %q", body)
	}
	second, err := putIf("k", "second", match(first))
	if err != nil || second == first {
		t.Fatalf("If-Match the current ETag: %q, %v", second, err)
	}
	if _, err := putIf("k", "x", func(in *objsync.PutInput) { in.IfMatch, in.IfNoneMatch = second, true }); err == nil {
		t.Fatal("both conditions at once were sent")
	}
	var sent []string
	for _, r := range e.rec.requests() {
		if r.Method == http.MethodPut {
			sent = append(sent, r.Header.Get("If-Match")+"|"+r.Header.Get("If-None-Match"))
		}
	}
	want := []string{"|*", "|*", `"0123456789abcdef0123456789abcdef"|`, `"` + first + `"|`, `"` + first + `"|`}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("conditions on the wire: %q, want %q", sent, want)
	}
}
