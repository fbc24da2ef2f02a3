package identity_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

const (
	account = "000000000000"
	region  = "us-east-1"
)

func newAuthority(t *testing.T) (*identity.Authority, *testkit.Clock) {
	t.Helper()
	a := identity.New(account, region)
	clock := testkit.NewClock()
	a.Now = clock.Now
	if _, err := a.AddRole(identity.Role{Name: "sandgate-local-ConnectRole", LogicalID: "ConnectRole"}); err != nil {
		t.Fatal(err)
	}
	return a, clock
}

// verifier is an endpoint that checks every request's signature for svc and records
// the outcome; it answers 200 with an empty JSON object.
type verifier struct {
	mu      sync.Mutex
	results []result
}

type result struct {
	p   *identity.Principal
	err error
}

func serve(t *testing.T, a *identity.Authority, svc identity.Service, readBody bool) (*httptest.Server, *verifier) {
	t.Helper()
	v := &verifier{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if readBody {
			body, _ = io.ReadAll(r.Body)
		}
		p, err := a.Verify(r, svc, body)
		v.mu.Lock()
		v.results = append(v.results, result{p, err})
		v.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	return srv, v
}

func (v *verifier) last(t *testing.T) result {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.results) == 0 {
		t.Fatal("no request reached the endpoint")
	}
	return v.results[len(v.results)-1]
}

func config(c identity.Credentials) aws.Config {
	return aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
}

func session(t *testing.T, a *identity.Authority, name string, tags map[string]string) (identity.Credentials, *identity.Principal) {
	t.Helper()
	c, p, err := a.Issue(identity.SessionSpec{RoleARN: a.RoleARN("sandgate-local-ConnectRole"), SessionName: name, Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// A DynamoDB call signed by the SDK with a session's credentials resolves to that
// session, its role and its tags.
func TestAuthority_Verify_DynamoDBSession(t *testing.T) {
	a, _ := newAuthority(t)
	srv, v := serve(t, a, identity.DynamoDB, true)
	c, _ := session(t, a, "ConnectFunction", map[string]string{"userId": "user_a"})
	db := dynamodb.NewFromConfig(config(c), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	if _, err := db.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String("t"), Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "USER#user_a"}}}); err != nil {
		t.Fatal(err)
	}
	r := v.last(t)
	if r.err != nil {
		t.Fatalf("verify: %v", r.err)
	}
	if r.p.ARN != "arn:aws:sts::"+account+":assumed-role/sandgate-local-ConnectRole/ConnectFunction" || r.p.Tags["userId"] != "user_a" {
		t.Fatalf("principal = %+v", r.p)
	}
}

// S3 signs the path as sent (no second escaping), with payload hashes or
// UNSIGNED-PAYLOAD, and list queries with escaped values.
func TestAuthority_Verify_S3Paths(t *testing.T) {
	a, _ := newAuthority(t)
	srv, v := serve(t, a, identity.S3, false)
	c, _ := session(t, a, "task-1", nil)
	cl := s3.NewFromConfig(config(c), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	ctx := context.Background()
	keys := []string{"users/user_a/files/plain.txt", "users/user_a/files/a b+c=d&e?f#g%h~i!j'k(l)m*n,o;p:q@r$s.txt", "users/user_a/files/ünïcødé/🙂"}
	for _, k := range keys {
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String(k), Body: strings.NewReader("hello")}); err != nil {
			t.Fatal(err)
		}
		if r := v.last(t); r.err != nil {
			t.Fatalf("put %q: %v", k, r.err)
		}
		_, _ = cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String(k)})
		if r := v.last(t); r.err != nil {
			t.Fatalf("get %q: %v", k, r.err)
		}
	}
	_, _ = cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("b"), Prefix: aws.String("users/user_a/ x+y/"), StartAfter: aws.String("a=b&c")})
	if r := v.last(t); r.err != nil {
		t.Fatalf("list: %v", r.err)
	}
}

// The management API's paths carry connection ids with '=' that the SDK escapes, and
// execute-api signs them escaped twice.
func TestAuthority_Verify_ManagementAPIPath(t *testing.T) {
	a, _ := newAuthority(t)
	srv, v := serve(t, a, identity.ExecuteAPI, true)
	c, _ := session(t, a, "MessageFunction", nil)
	m := apigatewaymanagementapi.NewFromConfig(config(c), func(o *apigatewaymanagementapi.Options) {
		o.BaseEndpoint = aws.String(srv.URL + "/local")
	})
	_, _ = m.PostToConnection(context.Background(), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String("Ab1=Cd/e+"), Data: []byte(`{"x":1}`)})
	if r := v.last(t); r.err != nil {
		t.Fatalf("verify: %v", r.err)
	}
}

// A presigned URL verifies until it expires.
func TestAuthority_Verify_Presigned(t *testing.T) {
	a, clock := newAuthority(t)
	srv, v := serve(t, a, identity.S3, false)
	c, _ := session(t, a, "task-1", nil)
	ps := s3.NewPresignClient(s3.NewFromConfig(config(c), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
	}))
	req, err := ps.PresignGetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("users/user_a/x y")},
		s3.WithPresignExpires(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	get := func() error {
		resp, err := http.Get(req.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return v.last(t).err
	}
	if err := get(); err != nil {
		t.Fatalf("fresh presigned URL: %v", err)
	}
	clock.Advance(11 * time.Minute)
	if err := get(); !errors.Is(err, identity.ErrSkewed) {
		t.Fatalf("expired presigned URL: err = %v, want ErrSkewed", err)
	}
}

// Each way a signature can be wrong is refused with its own reason.
func TestAuthority_Verify_Refusals(t *testing.T) {
	a, clock := newAuthority(t)
	c, _ := session(t, a, "ConnectFunction", nil)
	user, _, err := a.AddUser("operator", nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"TableName":"t"}`)
	sign := func(c identity.Credentials, service string, at time.Time) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "http://dynamodb.local/", bytes.NewReader(body))
		r.Header.Set("X-Amz-Target", "DynamoDB_20120810.GetItem")
		if c.SessionToken != "" {
			r.Header.Set("X-Amz-Security-Token", c.SessionToken)
		}
		sum := sha256hex(body)
		creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, sum, service, region, at); err != nil {
			t.Fatal(err)
		}
		r.RequestURI = "/"
		return r
	}
	verify := func(r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		_, err := a.Verify(r, identity.DynamoDB, b)
		return err
	}
	now := clock.Now()
	if err := verify(sign(c, "dynamodb", now)); err != nil {
		t.Fatalf("good request refused: %v", err)
	}
	if err := verify(sign(user, "dynamodb", now)); err != nil {
		t.Fatalf("user's request refused: %v", err)
	}
	cases := []struct {
		name string
		req  func() *http.Request
		want error
	}{
		{"unsigned", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			return r
		}, identity.ErrUnsigned},
		{"unknown key", func() *http.Request {
			return sign(identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}, "dynamodb", now)
		}, identity.ErrUnknownKey},
		{"wrong secret", func() *http.Request {
			return sign(identity.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: user.SecretAccessKey, SessionToken: c.SessionToken}, "dynamodb", now)
		}, identity.ErrBadSignature},
		{"no session token", func() *http.Request {
			return sign(identity.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}, "dynamodb", now)
		}, identity.ErrBadToken},
		{"tampered body", func() *http.Request {
			r := sign(c, "dynamodb", now)
			r.Body = io.NopCloser(strings.NewReader(`{"TableName":"other"}`))
			return r
		}, identity.ErrBadSignature},
		{"tampered header", func() *http.Request {
			r := sign(c, "dynamodb", now)
			r.Header.Set("X-Amz-Target", "DynamoDB_20120810.DeleteItem")
			return r
		}, identity.ErrBadSignature},
		{"other service", func() *http.Request { return sign(c, "s3", now) }, identity.ErrScope},
		{"skewed", func() *http.Request { return sign(c, "dynamodb", now.Add(-6*time.Minute)) }, identity.ErrSkewed},
		{"malformed", func() *http.Request {
			r := sign(c, "dynamodb", now)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
			return r
		}, identity.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.req())
			var ae *identity.AuthError
			if !errors.Is(err, tc.want) || !errors.As(err, &ae) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A session is refused once it has expired, a user's key never expires.
	clock.Advance(identity.DefaultSessionDuration)
	if err := verify(sign(c, "dynamodb", clock.Now())); !errors.Is(err, identity.ErrExpired) {
		t.Fatalf("expired session: err = %v, want ErrExpired", err)
	}
	if err := verify(sign(user, "dynamodb", clock.Now())); err != nil {
		t.Fatalf("user's key after an hour: %v", err)
	}
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
