package stslocal_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

const account, region = "000000000000", "us-east-1"

type fixture struct {
	auth   *identity.Authority
	clock  *testkit.Clock
	url    string
	vendor identity.Credentials // a function's session, the caller of AssumeRole
	denied []stslocal.TrustRequest
	sbx    string // the role assumed
}

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{auth: identity.New(account, region), clock: testkit.NewClock()}
	f.auth.Now = f.clock.Now
	for _, name := range []string{"sandgate-local-VendorRole", "sandgate-local-SandboxRole", "sandgate-local-Locked"} {
		if _, err := f.auth.AddRole(identity.Role{Name: name, MaxSession: 12 * time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	f.sbx = f.auth.RoleARN("sandgate-local-SandboxRole")
	var err error
	f.vendor, _, err = f.auth.Issue(identity.SessionSpec{RoleARN: f.auth.RoleARN("sandgate-local-VendorRole"), SessionName: "VendorFunction"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &stslocal.Server{Authority: f.auth, Trust: func(r stslocal.TrustRequest) error {
		if strings.HasSuffix(r.Role.Name, "Locked") {
			f.denied = append(f.denied, r)
			return errors.New("User: " + r.Caller.ARN + " is not authorized to perform: sts:AssumeRole on resource: " + r.Role.ARN)
		}
		return nil
	}}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

func (f *fixture) client(c identity.Credentials) *sts.Client {
	return sts.New(sts.Options{
		Region: region, BaseEndpoint: aws.String(f.url),
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
		Retryer:     aws.NopRetryer{},
	})
}

// A function's session knows who it is; the session it assumes carries its tags,
// transitive keys, session policy and source identity, and signs as itself.
func TestServer_AssumeRole_TaggedChainedSession(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	who, err := f.client(f.vendor).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(who.Arn); got != "arn:aws:sts::"+account+":assumed-role/sandgate-local-VendorRole/VendorFunction" || aws.ToString(who.Account) != account {
		t.Fatalf("caller = %s in %s", got, aws.ToString(who.Account))
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
	out, err := f.client(f.vendor).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("task-0123456789abcdef"),
		DurationSeconds: aws.Int32(3600), Policy: aws.String(policy), SourceIdentity: aws.String("user_a"),
		Tags:              []types.Tag{{Key: aws.String("userId"), Value: aws.String("user_a")}, {Key: aws.String("generation"), Value: aws.String("7")}},
		TransitiveTagKeys: []string{"userId"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := aws.ToTime(out.Credentials.Expiration).Sub(f.clock.Now()); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %s, want 1h", d)
	}
	c := identity.Credentials{AccessKeyID: aws.ToString(out.Credentials.AccessKeyId), SecretAccessKey: aws.ToString(out.Credentials.SecretAccessKey), SessionToken: aws.ToString(out.Credentials.SessionToken)}
	p, _, err := f.auth.Resolve(c.AccessKeyID, c.SessionToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Tags["userId"] != "user_a" || p.Tags["generation"] != "7" || len(p.TransitiveTagKeys) != 1 || !p.Chained ||
		p.SourceIdentity != "user_a" || !strings.Contains(string(p.SessionPolicy), "s3:GetObject") {
		t.Fatalf("session = %+v", p)
	}
	who, err = f.client(c).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(who.Arn) != aws.ToString(out.AssumedRoleUser.Arn) || !strings.HasSuffix(aws.ToString(who.Arn), "/task-0123456789abcdef") {
		t.Fatalf("assumed session is %s, AssumeRole said %s", aws.ToString(who.Arn), aws.ToString(out.AssumedRoleUser.Arn))
	}
	// The next hop keeps the transitive tag and the source identity, and may not
	// replace either.
	_, err = f.client(c).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("hop"),
		Tags: []types.Tag{{Key: aws.String("userId"), Value: aws.String("user_b")}}})
	if testkit.ErrorCode(err) != "ValidationError" {
		t.Fatalf("overriding a transitive tag: err = %v, want ValidationError", err)
	}
	_, err = f.client(c).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("hop"), SourceIdentity: aws.String("user_b")})
	if testkit.ErrorCode(err) != "ValidationError" {
		t.Fatalf("changing the source identity: err = %v, want ValidationError", err)
	}
	hop, err := f.client(c).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("hop")})
	if err != nil {
		t.Fatal(err)
	}
	hp, _, _ := f.auth.Resolve(aws.ToString(hop.Credentials.AccessKeyId), aws.ToString(hop.Credentials.SessionToken))
	if hp == nil || hp.Tags["userId"] != "user_a" || hp.Tags["generation"] != "" || hp.SourceIdentity != "user_a" {
		t.Fatalf("second hop = %+v", hp)
	}
}

// Role chaining is held to an hour; the trust decision's denial is AccessDenied, and a
// role that does not exist is not told apart from one the caller may not assume.
func TestServer_AssumeRole_Refusals(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	cl := f.client(f.vendor)
	_, err := cl.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(3601)})
	if testkit.ErrorCode(err) != "ValidationError" || !strings.Contains(err.Error(), "role chaining") {
		t.Fatalf("chained 3601 s: err = %v", err)
	}
	_, err = cl.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.auth.RoleARN("sandgate-local-Locked")), RoleSessionName: aws.String("s1")})
	if testkit.ErrorCode(err) != "AccessDenied" || len(f.denied) != 1 || f.denied[0].Caller.SessionName != "VendorFunction" {
		t.Fatalf("denied by trust: err = %v, trust saw %d requests", err, len(f.denied))
	}
	_, err = cl.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.auth.RoleARN("nope")), RoleSessionName: aws.String("s1")})
	if testkit.ErrorCode(err) != "AccessDenied" {
		t.Fatalf("unknown role: err = %v", err)
	}
	_, err = cl.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("s1"), Policy: aws.String("{not json")})
	if testkit.ErrorCode(err) != "MalformedPolicyDocument" {
		t.Fatalf("bad policy: err = %v", err)
	}
	_, err = cl.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(f.sbx), RoleSessionName: aws.String("bad name!")})
	if testkit.ErrorCode(err) != "ValidationError" {
		t.Fatalf("bad session name: err = %v", err)
	}
}

// Unsigned, unknown, tampered and expired credentials get STS's own errors.
func TestServer_SignatureRefusals(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	resp, err := http.Post(f.url, "application/x-www-form-urlencoded", strings.NewReader("Action=GetCallerIdentity&Version=2011-06-15"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned: %d", resp.StatusCode)
	}
	unknown := identity.Credentials{AccessKeyID: "ASIAAAAAAAAAAAAAAAAA", SecretAccessKey: f.vendor.SecretAccessKey, SessionToken: f.vendor.SessionToken}
	if _, err := f.client(unknown).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); testkit.ErrorCode(err) != "InvalidClientTokenId" {
		t.Fatalf("unknown key: %v", err)
	}
	wrong := f.vendor
	wrong.SecretAccessKey = strings.Repeat("x", 40)
	if _, err := f.client(wrong).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); testkit.ErrorCode(err) != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	// A session issued two hours ago, signing now.
	f.clock.Advance(-2 * time.Hour)
	old, _, err := f.auth.Issue(identity.SessionSpec{RoleARN: f.sbx, SessionName: "old"})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Hour)
	if _, err := f.client(old).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); testkit.ErrorCode(err) != "ExpiredToken" {
		t.Fatalf("expired: %v", err)
	}
}
