package s3local_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
)

const (
	account    = "000000000000"
	region     = "us-east-1"
	bucket     = "sandgate-test"
	taskRole   = "sandgate-test-TaskRole"
	noListRole = "sandgate-test-NoListRole"
)

// objectsStatement lets a session read, write and delete its own user's prefix only
// (the session tag userId), as the template's task role does.
const objectsStatement = `{"Sid": "Objects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
  "Resource": "arn:aws:s3:::sandgate-test/users/${aws:PrincipalTag/userId}/*"}`

// taskPolicy adds listing of the user's prefix; noListPolicy lacks it.
const (
	taskPolicy = `{"Version": "2012-10-17", "Statement": [` + objectsStatement + `,
  {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::sandgate-test",
   "Condition": {"StringLike": {"s3:prefix": ["users/${aws:PrincipalTag/userId}/*"]}}}]}`
	noListPolicy = `{"Version": "2012-10-17", "Statement": [` + objectsStatement + `]}`
	allowAll     = `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}`
)

// The test binary's policy evaluator (one Node process), closed by TestMain.
var shared struct {
	once sync.Once
	eval *iampolicy.Evaluator
	err  error
}

func evaluator(t *testing.T) *iampolicy.Evaluator {
	t.Helper()
	shared.once.Do(func() {
		root, err := iampolicy.RepoRoot()
		if err != nil {
			shared.err = err
			return
		}
		shared.eval, shared.err = iampolicy.Start(context.Background(), filepath.Join(root, iampolicy.ScriptPath),
			filepath.Join(root, iampolicy.NodeModulesPath), iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	})
	if shared.err != nil {
		t.Fatalf("policy evaluator: %v", shared.err)
	}
	return shared.eval
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.eval != nil {
		_ = shared.eval.Close()
	}
	os.Exit(code)
}

// offsetClock is the Authority's clock: real time plus an offset a test may move.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// gated is an S3 endpoint whose every request is verified and authorised.
type gated struct {
	srv   *s3local.Server
	auth  *identity.Authority
	clock *offsetClock
	admin identity.Credentials
	logs  *testkit.Logs
}

func startGated(t *testing.T, authorize bool) *gated {
	t.Helper()
	g := &gated{clock: &offsetClock{}, logs: &testkit.Logs{}}
	g.auth = identity.New(account, region)
	g.auth.Now = g.clock.Now
	for name, doc := range map[string]string{taskRole: taskPolicy, noListRole: noListPolicy} {
		if _, err := g.auth.AddRole(identity.Role{Name: name, Policies: []identity.Policy{{Name: name + "/s3", Document: json.RawMessage(doc)}}}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if g.admin, _, err = g.auth.AddUser("operator", []identity.Policy{{Name: "operator/all", Document: json.RawMessage(allowAll)}}); err != nil {
		t.Fatal(err)
	}
	cfg := s3local.Config{Bucket: bucket, Authority: g.auth, Log: g.logs.Logger()}
	if authorize {
		cfg.Authorizer = evaluator(t)
	}
	g.srv = start(t, cfg)
	return g
}

// session issues a session of role for userID.
func (g *gated) session(t *testing.T, role, userID string) identity.Credentials {
	t.Helper()
	c, _, err := g.auth.Issue(identity.SessionSpec{RoleARN: g.auth.RoleARN(role), SessionName: "task-" + userID, Tags: map[string]string{"userId": userID}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client is an SDK client signing with c, trying each call once (attempts when given).
func (g *gated) client(t *testing.T, c identity.Credentials, optFns ...func(*s3.Options)) *s3.Client {
	t.Helper()
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(g.srv.URL())...)
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, append([]func(*s3.Options){func(o *s3.Options) {
		o.UsePathStyle = true
		o.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
		o.Retryer = retry.NewStandard(func(r *retry.StandardOptions) { r.MaxAttempts = 1 })
	}}, optFns...)...)
}

func putObject(c *s3.Client, key, body string) error {
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	return err
}

func getObject(c *s3.Client, key string) (string, error) {
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return string(b), err
}

func headObject(c *s3.Client, key string) error {
	_, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	return err
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// absent fails the test unless key does not exist (asked as the operator).
func (g *gated) absent(t *testing.T, key string) {
	t.Helper()
	if _, err := getObject(g.client(t, g.admin), key); testkit.ErrorCode(err) != "NoSuchKey" {
		t.Fatalf("%s: %v, want NoSuchKey", key, err)
	}
}

// bodySwap replaces the body of every request after it is signed.
type bodySwap struct{ from, to string }

func (s bodySwap) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, []byte(s.from), []byte(s.to))
	r = r.Clone(r.Context())
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	return http.DefaultTransport.RoundTrip(r)
}

// Every way a signature can be wrong gets S3's own error, as the SDK parses it, with
// S3's status; nothing is written.
func TestGate_Refusals_S3ErrorShapes(t *testing.T) {
	g := startGated(t, true)
	good := g.session(t, taskRole, "user_a")
	g.clock.offset.Store(int64(-2 * time.Hour))
	old := g.session(t, taskRole, "user_a")
	g.clock.offset.Store(0)
	const key = "users/user_a/files/refused.txt"

	cases := []struct {
		name   string
		creds  identity.Credentials
		optFns []func(*s3.Options)
		skew   time.Duration
		code   string
		status int
	}{
		{"unsigned", identity.Credentials{}, []func(*s3.Options){func(o *s3.Options) { o.Credentials = aws.AnonymousCredentials{} }}, 0, "AccessDenied", 403},
		{"unknown key", identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: good.SecretAccessKey, SessionToken: good.SessionToken}, nil, 0, "InvalidAccessKeyId", 403},
		{"wrong secret", identity.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: g.admin.SecretAccessKey, SessionToken: good.SessionToken}, nil, 0, "SignatureDoesNotMatch", 403},
		{"no session token", identity.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey}, nil, 0, "InvalidToken", 400},
		{"another session's token", identity.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey, SessionToken: old.SessionToken}, nil, 0, "InvalidToken", 400},
		{"expired session", old, nil, 0, "ExpiredToken", 400},
		{"skewed clock", good, nil, 20 * time.Minute, "RequestTimeTooSkewed", 403},
		{"other region", good, []func(*s3.Options){func(o *s3.Options) { o.Region = "eu-west-1" }}, 0, "AuthorizationHeaderMalformed", 400},
		{"tampered body", good, []func(*s3.Options){func(o *s3.Options) {
			o.HTTPClient = &http.Client{Transport: bodySwap{"mine", "evil"}}
		}}, 0, "XAmzContentSHA256Mismatch", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g.clock.offset.Store(int64(tc.skew))
			defer g.clock.offset.Store(0)
			err := putObject(g.client(t, tc.creds, tc.optFns...), key, "mine")
			if got := testkit.ErrorCode(err); got != tc.code || status(err) != tc.status {
				t.Fatalf("PutObject: %q, HTTP %d (%v); want %q, HTTP %d", got, status(err), err, tc.code, tc.status)
			}
		})
	}
	g.absent(t, key)
	for _, secret := range []string{good.SecretAccessKey, good.SessionToken, old.SessionToken, g.admin.SecretAccessKey} {
		if strings.Contains(g.logs.String(), secret) {
			t.Fatal("a secret or session token reached the log")
		}
	}
}

// The wire shape: S3's XML error with the request id it also sends as a header; a
// HEAD's refusal has the status and no body.
func TestGate_Unsigned_WireShape(t *testing.T) {
	g := startGated(t, true)
	resp, err := http.Get(g.srv.URL() + "/" + bucket + "/users/user_a/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc struct {
		Code      string
		Message   string
		RequestID string `xml:"RequestId"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/xml" ||
		doc.Code != "AccessDenied" || doc.Message != "Access Denied" || doc.RequestID == "" || resp.Header.Get("X-Amz-Request-Id") != doc.RequestID {
		t.Fatalf("HTTP %d, headers %v, body %s", resp.StatusCode, resp.Header, body)
	}
	resp, err = http.Head(g.srv.URL() + "/" + bucket + "/users/user_a/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(body) != 0 || resp.Header.Get("X-Amz-Request-Id") == "" {
		t.Fatalf("HEAD: HTTP %d, %d body bytes", resp.StatusCode, len(body))
	}
	// The SDK's HeadObject sees the bare 403.
	err = headObject(g.client(t, identity.Credentials{}, func(o *s3.Options) { o.Credentials = aws.AnonymousCredentials{} }), "users/user_a/x")
	if status(err) != http.StatusForbidden {
		t.Fatalf("HeadObject unsigned: %v", err)
	}
}

// The policy decides: a session reads and writes its user's prefix; another user's
// is AccessDenied in S3's words, naming the session, the action and the object.
func TestGate_Authorize_OwnPrefixOnly(t *testing.T) {
	g := startGated(t, true)
	c := g.client(t, g.session(t, taskRole, "user_a"))
	if err := putObject(c, "users/user_a/files/ünï cödé.txt", "mine"); err != nil {
		t.Fatalf("own prefix: %v", err)
	}
	if got, err := getObject(c, "users/user_a/files/ünï cödé.txt"); err != nil || got != "mine" {
		t.Fatalf("own object: %q, %v", got, err)
	}
	err := putObject(c, "users/user_b/files/x.txt", "theirs")
	if testkit.ErrorCode(err) != "AccessDenied" || status(err) != http.StatusForbidden {
		t.Fatalf("another user's prefix: %v", err)
	}
	for _, want := range []string{"assumed-role/" + taskRole + "/task-user_a", `is not authorized to perform: s3:PutObject on resource: "arn:aws:s3:::sandgate-test/users/user_b/files/x.txt"`} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("denial %q lacks %q", err, want)
		}
	}
	g.absent(t, "users/user_b/files/x.txt")
	// Listing: the user's prefix only (the condition on s3:prefix).
	if _, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("users/user_a/")}); err != nil {
		t.Fatalf("list own prefix: %v", err)
	}
	_, err = c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("users/")})
	if testkit.ErrorCode(err) != "AccessDenied" {
		t.Fatalf("list all users: %v", err)
	}
}

// A missing key answers 404 only to a caller who may list the bucket (the key as
// s3:prefix), 403 to one who may not, for GetObject and HeadObject alike.
func TestGate_GetObject_MissingKeyNeedsListBucket(t *testing.T) {
	g := startGated(t, true)
	const missing = "users/user_a/files/missing.txt"
	lister := g.client(t, g.session(t, taskRole, "user_a"))
	if _, err := getObject(lister, missing); testkit.ErrorCode(err) != "NoSuchKey" || status(err) != http.StatusNotFound {
		t.Fatalf("GetObject with ListBucket: %v, want 404 NoSuchKey", err)
	}
	if err := headObject(lister, missing); status(err) != http.StatusNotFound {
		t.Fatalf("HeadObject with ListBucket: %v, want 404", err)
	}
	noList := g.client(t, g.session(t, noListRole, "user_a"))
	_, err := getObject(noList, missing)
	if testkit.ErrorCode(err) != "AccessDenied" || status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "s3:ListBucket") {
		t.Fatalf("GetObject without ListBucket: %v, want 403 AccessDenied on s3:ListBucket", err)
	}
	if err := headObject(noList, missing); status(err) != http.StatusForbidden {
		t.Fatalf("HeadObject without ListBucket: %v, want 403", err)
	}
	// An object that exists is read without ListBucket.
	if err := putObject(noList, "users/user_a/files/there.txt", "here"); err != nil {
		t.Fatal(err)
	}
	if got, err := getObject(noList, "users/user_a/files/there.txt"); err != nil || got != "here" {
		t.Fatalf("existing object without ListBucket: %q, %v", got, err)
	}
	// Another user's missing key: GetObject itself is denied first.
	if _, err := getObject(lister, "users/user_b/files/missing.txt"); testkit.ErrorCode(err) != "AccessDenied" || !strings.Contains(err.Error(), "s3:GetObject") {
		t.Fatalf("another user's missing key: %v", err)
	}
	// A missing bucket stays NoSuchBucket for the operator.
	if _, err := g.client(t, g.admin).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("no-such-bucket"), Key: aws.String("k")}); testkit.ErrorCode(err) != "NoSuchBucket" {
		t.Fatalf("missing bucket: %v", err)
	}
}

// CopyObject needs s3:PutObject on the target and s3:GetObject on the source.
func TestGate_CopyObject_NeedsBothSides(t *testing.T) {
	g := startGated(t, true)
	admin := g.client(t, g.admin)
	for _, k := range []string{"users/user_a/src.txt", "users/user_b/src.txt"} {
		if err := putObject(admin, k, "data of "+k); err != nil {
			t.Fatal(err)
		}
	}
	c := g.client(t, g.session(t, taskRole, "user_a"))
	cp := func(src, dst string) error {
		_, err := c.CopyObject(context.Background(), &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String(dst), CopySource: aws.String(bucket + "/" + src)})
		return err
	}
	if err := cp("users/user_b/src.txt", "users/user_a/stolen.txt"); testkit.ErrorCode(err) != "AccessDenied" || !strings.Contains(err.Error(), "s3:GetObject") {
		t.Fatalf("copy from another user: %v", err)
	}
	g.absent(t, "users/user_a/stolen.txt")
	if err := cp("users/user_a/src.txt", "users/user_b/planted.txt"); testkit.ErrorCode(err) != "AccessDenied" || !strings.Contains(err.Error(), "s3:PutObject") {
		t.Fatalf("copy to another user: %v", err)
	}
	g.absent(t, "users/user_b/planted.txt")
	if err := cp("users/user_a/src.txt", "users/user_a/copy.txt"); err != nil {
		t.Fatalf("copy within own prefix: %v", err)
	}
	if got, err := getObject(c, "users/user_a/copy.txt"); err != nil || got != "data of users/user_a/src.txt" {
		t.Fatalf("copy: %q, %v", got, err)
	}
}

// DeleteObjects is decided key by key, as S3 does: the allowed keys are deleted, each
// refused one comes back as an AccessDenied error in the result, and it stays.
func TestGate_DeleteObjects_DecidedPerKey(t *testing.T) {
	g := startGated(t, true)
	admin := g.client(t, g.admin)
	keys := []string{"users/user_a/1", "users/user_b/1", "users/user_a/2"}
	for _, k := range keys {
		if err := putObject(admin, k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	c := g.client(t, g.session(t, taskRole, "user_a"))
	del := func(keys ...string) (*s3.DeleteObjectsOutput, error) {
		var ids []types.ObjectIdentifier
		for _, k := range keys {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		return c.DeleteObjects(context.Background(), &s3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &types.Delete{Objects: ids}})
	}
	out, err := del(keys...)
	if err != nil {
		t.Fatalf("DeleteObjects: %v", err)
	}
	var deleted []string
	for _, d := range out.Deleted {
		deleted = append(deleted, aws.ToString(d.Key))
	}
	if len(deleted) != 2 || len(out.Errors) != 1 || aws.ToString(out.Errors[0].Key) != "users/user_b/1" || aws.ToString(out.Errors[0].Code) != "AccessDenied" {
		t.Fatalf("deleted %v, errors %+v", deleted, out.Errors)
	}
	g.absent(t, "users/user_a/1")
	g.absent(t, "users/user_a/2")
	if got, err := getObject(admin, "users/user_b/1"); err != nil || got != "x" {
		t.Fatalf("refused key: %q, %v", got, err)
	}
	// Every key refused: nothing reaches gofakes3, every key reported.
	out, err = del("users/user_b/1")
	if err != nil || len(out.Deleted) != 0 || len(out.Errors) != 1 {
		t.Fatalf("all refused: %+v, %v", out, err)
	}
	if _, err := getObject(admin, "users/user_b/1"); err != nil {
		t.Fatalf("refused key deleted: %v", err)
	}
}

// Presigned GETs (query authentication) work until they expire; one for an object the
// signer may not read is refused.
func TestGate_Presigned_Get(t *testing.T) {
	g := startGated(t, true)
	if err := putObject(g.client(t, g.admin), "users/user_a/files/p.txt", "presigned"); err != nil {
		t.Fatal(err)
	}
	if err := putObject(g.client(t, g.admin), "users/user_b/files/p.txt", "theirs"); err != nil {
		t.Fatal(err)
	}
	ps := s3.NewPresignClient(g.client(t, g.session(t, taskRole, "user_a")))
	presign := func(key string) string {
		req, err := ps.PresignGetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}, s3.WithPresignExpires(10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return req.URL
	}
	fetch := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	own := presign("users/user_a/files/p.txt")
	if code, body := fetch(own); code != http.StatusOK || body != "presigned" {
		t.Fatalf("presigned GET: %d %q", code, body)
	}
	if code, body := fetch(presign("users/user_b/files/p.txt")); code != http.StatusForbidden || !strings.Contains(body, "<Code>AccessDenied</Code>") {
		t.Fatalf("presigned GET of another user's object: %d %q", code, body)
	}
	g.clock.offset.Store(int64(11 * time.Minute))
	if code, body := fetch(own); code != http.StatusForbidden || !strings.Contains(body, "<Message>Request has expired</Message>") {
		t.Fatalf("expired presigned GET: %d %q", code, body)
	}
}

// With an Authority and no Authorizer every verified caller is served and unsigned
// requests are still refused.
func TestGate_NoAuthorizer_VerifiesOnly(t *testing.T) {
	g := startGated(t, false)
	c := g.client(t, g.session(t, noListRole, "user_a"))
	if err := putObject(c, "users/user_b/x", "any"); err != nil {
		t.Fatalf("verified caller without an authorizer: %v", err)
	}
	anon := g.client(t, identity.Credentials{}, func(o *s3.Options) { o.Credentials = aws.AnonymousCredentials{} })
	if _, err := getObject(anon, "users/user_b/x"); testkit.ErrorCode(err) != "AccessDenied" {
		t.Fatalf("unsigned: %v", err)
	}
}

// The fault switches act before the gate, as before it existed: an injected failure
// is retried by the SDK and the retry is verified and served.
func TestGate_Faults_StillApply(t *testing.T) {
	g := startGated(t, true)
	if err := g.srv.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	c := g.client(t, g.session(t, taskRole, "user_a"), func(o *s3.Options) {
		o.Retryer = retry.NewStandard(func(r *retry.StandardOptions) { r.MaxAttempts = 2; r.MaxBackoff = time.Millisecond })
	})
	if err := putObject(c, "users/user_a/f", "v"); err != nil {
		t.Fatalf("put after one injected failure: %v", err)
	}
	if g.srv.Faults.Injected() != 1 || g.srv.Faults.Requests(http.MethodPut) != 2 {
		t.Fatalf("injected %d, PUTs %d", g.srv.Faults.Injected(), g.srv.Faults.Requests(http.MethodPut))
	}
}

// An operator's credentials work with the AWS CLI (listing buckets and objects); a
// wrong secret is refused with S3's error.
func TestGate_AWSCLI_S3Ls(t *testing.T) {
	testkit.AWSCLI(t)
	g := startGated(t, true)
	if err := putObject(g.client(t, g.admin), "users/user_a/files/cli.txt", "hello"); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := testkit.RunAWSCLI(t, region, g.admin, "s3", "ls", "--endpoint-url", g.srv.URL())
	if err != nil || !strings.Contains(stdout, bucket) {
		t.Fatalf("aws s3 ls: %v\nstdout %q\nstderr %q", err, stdout, stderr)
	}
	stdout, stderr, err = testkit.RunAWSCLI(t, region, g.admin, "s3", "ls", "--recursive", "s3://"+bucket+"/users/", "--endpoint-url", g.srv.URL())
	if err != nil || !strings.Contains(stdout, "users/user_a/files/cli.txt") {
		t.Fatalf("aws s3 ls s3://%s/users/: %v\nstdout %q\nstderr %q", bucket, err, stdout, stderr)
	}
	stdout, stderr, err = testkit.RunAWSCLI(t, region, g.admin, "s3", "cp", "s3://"+bucket+"/users/user_a/files/cli.txt", "-", "--endpoint-url", g.srv.URL())
	if err != nil || stdout != "hello" {
		t.Fatalf("aws s3 cp: %v\nstdout %q\nstderr %q", err, stdout, stderr)
	}
	wrong := g.admin
	wrong.SecretAccessKey = strings.Repeat("x", len(wrong.SecretAccessKey))
	_, stderr, err = testkit.RunAWSCLI(t, region, wrong, "s3", "ls", "s3://"+bucket+"/", "--endpoint-url", g.srv.URL())
	if err == nil || !strings.Contains(stderr, "SignatureDoesNotMatch") {
		t.Fatalf("wrong secret: %v, stderr %q; want SignatureDoesNotMatch", err, stderr)
	}
}

// The SDK's default checksums (WhenSupported) pass the gate over plain HTTP and the
// bytes come back as written (FACTS.md: over HTTPS that default stores aws-chunked
// bodies verbatim, so the stack's clients ask for checksums only when required).
func TestGate_DefaultChecksums_BytesIntact(t *testing.T) {
	g := startGated(t, true)
	c := g.client(t, g.session(t, taskRole, "user_a"), func(o *s3.Options) {
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenSupported
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenSupported
	})
	want := strings.Repeat("0123456789abcdef", 3<<16) + "tail" // 3 MiB and a bit: the SDK sends Expect: 100-continue
	if err := putObject(c, "users/user_a/big.bin", want); err != nil {
		t.Fatal(err)
	}
	if got, err := getObject(c, "users/user_a/big.bin"); err != nil || got != want {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(want))
	}
}
