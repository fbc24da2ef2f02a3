package preflight_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/preflight"
	pt "github.com/sandgate/sandgate/infra/preflight/preflighttest"
)

// base is a stack every check passes with in preflighttest's account.
func base() map[string]string {
	return map[string]string{
		"SandboxImage":             pt.Image,
		"SubnetIds":                pt.SubnetA + "," + pt.SubnetB,
		"FunctionSecurityGroupIds": "sg-0a1b2c3d4e5f60001",
		"SandboxSecurityGroupIds":  "sg-0a1b2c3d4e5f60002",
		"BucketName":               pt.Bucket,
	}
}

// with is base with pairs of name, value over it.
func with(kv ...string) map[string]string {
	m := base()
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// run runs every check as creds against the repository's template under overrides.
func run(t *testing.T, acct *pt.Account, creds identity.Credentials, overrides map[string]string) *preflight.Report {
	t.Helper()
	st, err := preflight.LoadStack(repoTemplate, overrides)
	if err != nil {
		t.Fatal(err)
	}
	st.Region = pt.Region
	return preflight.New(acct.Config(t, creds), st).Run(context.Background())
}

// result returns the named check's result.
func result(t *testing.T, r *preflight.Report, check string) preflight.Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Check == check {
			return res
		}
	}
	t.Fatalf("no %s result in %+v", check, r.Results)
	return preflight.Result{}
}

// check runs every check as the operator and returns one.
func check(t *testing.T, acct *pt.Account, name string, overrides map[string]string) preflight.Result {
	t.Helper()
	return result(t, run(t, acct, acct.Operator, overrides), name)
}

// expect fails the test unless res has status and its text holds every substring.
func expect(t *testing.T, res preflight.Result, status preflight.Status, substrings ...string) {
	t.Helper()
	text := res.Summary + "\n" + strings.Join(res.Details, "\n") + "\nfix: " + res.Fix
	if res.Status != status {
		t.Fatalf("%s: status %s, want %s:\n%s", res.Check, res.Status, status, text)
	}
	for _, s := range substrings {
		if !strings.Contains(text, s) {
			t.Errorf("%s: no %q in:\n%s", res.Check, s, text)
		}
	}
	if status == preflight.Fail && res.Fix == "" && !strings.Contains(res.Summary, "access denied") {
		t.Errorf("%s failed without a fix: %s", res.Check, text)
	}
}

// A ready account: every check passes, every call only reads, and the output never
// holds the signing secrets.
func TestChecker_Run_PassingAccount(t *testing.T) {
	acct := pt.StartAccount(t)
	rep := run(t, acct, acct.Operator, base())
	for _, res := range rep.Results {
		want := preflight.OK
		if res.Check == preflight.CheckStorageCredentials {
			want = preflight.Skip
		}
		if res.Status != want {
			t.Errorf("%s: %s %s (fix: %s) %q", res.Check, res.Status, res.Summary, res.Fix, res.Details)
		}
	}
	if rep.Failed() != 0 || rep.Account != pt.AccountID || !strings.HasSuffix(rep.Caller, ":user/operator") {
		t.Fatalf("failed %d, account %q, caller %q", rep.Failed(), rep.Account, rep.Caller)
	}
	if ok, writes := pt.ReadOnly(acct.Replay.Calls()); !ok {
		t.Fatalf("calls that write: %q", writes)
	}
	var text, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, secret := range strings.Split(pt.SigningSecrets, ",") {
		if strings.Contains(text.String()+js.String(), secret) {
			t.Fatal("the report holds a signing secret")
		}
	}
	if !strings.Contains(text.String(), "every check passed.") {
		t.Fatalf("text report:\n%s", text.String())
	}
}

// Missing and refused parameters fail the parameters check by name; the checks that
// need them are skipped, the others run.
func TestChecker_Run_Parameters(t *testing.T) {
	acct := pt.StartAccount(t)
	o := with("SandboxCpu", "300", "Colour", "blue")
	delete(o, "SandboxImage")
	delete(o, "SubnetIds")
	rep := run(t, acct, acct.Operator, o)
	expect(t, result(t, rep, preflight.CheckParameters), preflight.Fail,
		"SandboxCpu: invalid parameter", "Colour: invalid parameter", "SandboxImage: no value and no default",
		"SubnetIds: no value and no default", "-parameter-overrides")
	expect(t, result(t, rep, preflight.CheckSandboxImage), preflight.Skip, "SandboxImage has no value")
	expect(t, result(t, rep, preflight.CheckSubnets), preflight.Skip, "SubnetIds has no value")
	expect(t, result(t, rep, preflight.CheckBucket), preflight.OK)
	// SandboxCpu fell back to its default (512).
	expect(t, result(t, rep, preflight.CheckFargate), preflight.OK, "needs 25")
}

func TestChecker_Credentials(t *testing.T) {
	acct := pt.StartAccount(t)
	skipsTheRest := func(t *testing.T, rep *preflight.Report) {
		t.Helper()
		for _, res := range rep.Results[2:] {
			if res.Status != preflight.Skip {
				t.Errorf("%s ran without working credentials: %s", res.Check, res.Status)
			}
		}
		if rep.Failed() != 1 {
			t.Errorf("failed = %d, want the credentials check alone", rep.Failed())
		}
	}
	t.Run("unknown key", func(t *testing.T) {
		rep := run(t, acct, identity.Credentials{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, base())
		expect(t, result(t, rep, preflight.CheckCredentials), preflight.Fail, "credentials were refused (InvalidClientTokenId", "aws sso login")
		skipsTheRest(t, rep)
	})
	t.Run("expired session", func(t *testing.T) {
		if _, err := acct.Authority.AddRole(identity.Role{Name: "deployer", Policies: []identity.Policy{{Name: "deployer/all",
			Document: json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)}}}); err != nil {
			t.Fatal(err)
		}
		// A session issued two hours ago for fifteen minutes.
		acct.Advance(-2 * time.Hour)
		creds, _, err := acct.Authority.Issue(identity.SessionSpec{RoleARN: acct.Authority.RoleARN("deployer"), SessionName: "alice", Duration: 15 * time.Minute})
		acct.Advance(2 * time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		rep := run(t, acct, creds, base())
		expect(t, result(t, rep, preflight.CheckCredentials), preflight.Fail, "refused (ExpiredToken")
		skipsTheRest(t, rep)
	})
	t.Run("none", func(t *testing.T) {
		st, err := preflight.LoadStack(repoTemplate, base())
		if err != nil {
			t.Fatal(err)
		}
		st.Region = pt.Region
		c := preflight.New(acct.Config(t, acct.Operator), st)
		c.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{}, errors.New("failed to refresh cached credentials, no EC2 IMDS role found")
		})
		rep := c.Run(context.Background())
		expect(t, result(t, rep, preflight.CheckCredentials), preflight.Fail, "no usable AWS credentials", "no EC2 IMDS role found", "AWS_PROFILE")
		skipsTheRest(t, rep)
	})
	t.Run("no region", func(t *testing.T) {
		st, err := preflight.LoadStack(repoTemplate, base())
		if err != nil {
			t.Fatal(err)
		}
		rep := preflight.New(acct.Config(t, acct.Operator), st).Run(context.Background())
		expect(t, result(t, rep, preflight.CheckCredentials), preflight.Fail, "no region", "AWS_REGION")
		skipsTheRest(t, rep)
	})
}

// A caller who may read nothing hears, for each check, which action was denied.
func TestChecker_Run_AccessDenied(t *testing.T) {
	acct := pt.StartAccount(t)
	acct.Replay.Override(t, "iam:GetRole", pt.DeniedIAM)
	acct.Replay.Override(t, "ec2:DescribeSubnets", pt.DeniedEC2)
	acct.Replay.Override(t, "lambda:GetAccountSettings", pt.DeniedLambda)
	acct.Replay.Override(t, "ecr:DescribeImages", pt.JSONError(http.StatusBadRequest, "AccessDeniedException",
		"User: arn:aws:iam::123456789012:user/viewer is not authorized to perform: ecr:DescribeImages on resource: arn:aws:ecr:eu-west-1:123456789012:repository/sandgate-sandbox because no identity-based policy allows the ecr:DescribeImages action"))
	acct.Replay.Override(t, "servicequotas:GetServiceQuota", pt.JSONError(http.StatusBadRequest, "AccessDeniedException",
		"User: arn:aws:iam::123456789012:user/viewer is not authorized to perform: servicequotas:GetServiceQuota"))
	rep := run(t, acct, acct.Viewer, base())
	expect(t, result(t, rep, preflight.CheckCredentials), preflight.OK, ":user/viewer")
	for check, action := range map[string]string{
		preflight.CheckServiceLinkedRole: "iam:GetRole",
		// These two are the emulators' own decisions, through the policy evaluator.
		preflight.CheckSigningSecret:     "secretsmanager:GetSecretValue",
		preflight.CheckBucket:            "s3:ListBucket",
		preflight.CheckSandboxImage:      "ecr:DescribeImages",
		preflight.CheckSubnets:           "ec2:DescribeSubnets",
		preflight.CheckLambdaConcurrency: "lambda:GetAccountSettings",
		preflight.CheckFargate:           "servicequotas:GetServiceQuota",
	} {
		res := result(t, rep, check)
		expect(t, res, preflight.Fail, "access denied", action)
		if strings.Contains(res.Summary, "goroutine") || strings.Contains(res.Summary, "panic") {
			t.Errorf("%s: %s", check, res.Summary)
		}
	}
}

func TestChecker_ServiceLinkedRole_Missing(t *testing.T) {
	acct := pt.StartAccount(t)
	acct.Replay.Override(t, "iam:GetRole", pt.NoSuchRoleECS)
	expect(t, check(t, acct, preflight.CheckServiceLinkedRole, base()), preflight.Fail,
		"AWSServiceRoleForECS does not exist", "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com")
}

// The signing secret, against the local Secrets Manager.
func TestChecker_SigningSecret(t *testing.T) {
	acct := pt.StartAccount(t)
	sm := secretsmanager.NewFromConfig(acct.Config(t, acct.Operator))
	current, err := sm.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(pt.SigningSecretName)})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("current version", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSigningSecret, base()),
			preflight.OK, "2 secret(s)", aws.ToString(current.VersionId))
	})
	t.Run("no such secret", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSigningSecret, with("SigningSecretName", "sandgate/elsewhere")),
			preflight.Fail, "no secret sandgate/elsewhere", "aws secretsmanager create-secret --name sandgate/elsewhere")
	})
	t.Run("weak second secret", func(t *testing.T) {
		strong, weak := strings.Repeat("s", 40), "only-twenty-bytes-xx"
		if _, err := acct.Secrets.Put("sandgate/weak", strong+","+weak); err != nil {
			t.Fatal(err)
		}
		res := check(t, acct, preflight.CheckSigningSecret, with("SigningSecretName", "sandgate/weak"))
		expect(t, res, preflight.Fail, "secret 2", "at least 32 bytes", "put-secret-value")
		if text := fmt.Sprint(res); strings.Contains(text, strong) || strings.Contains(text, weak) {
			t.Fatalf("the result shows the value: %s", text)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := acct.Secrets.Put("sandgate/empty", " , "); err != nil {
			t.Fatal(err)
		}
		expect(t, check(t, acct, preflight.CheckSigningSecret, with("SigningSecretName", "sandgate/empty")), preflight.Fail, "no signing secret")
	})
	// The functions read the secret at run time: a long list is no longer bounded by
	// Lambda's 4 KB environment.
	t.Run("long list", func(t *testing.T) {
		if _, err := acct.Secrets.Put("sandgate/long", strings.TrimSuffix(strings.Repeat(strings.Repeat("k", 60)+",", 60), ",")); err != nil {
			t.Fatal(err)
		}
		expect(t, check(t, acct, preflight.CheckSigningSecret, with("SigningSecretName", "sandgate/long")), preflight.OK, "60 secret(s)")
	})
	t.Run("binary", func(t *testing.T) {
		acct.Replay.Override(t, "secretsmanager:GetSecretValue", pt.Answer{Body: pt.BinarySecret})
		expect(t, check(t, acct, preflight.CheckSigningSecret, base()), preflight.Fail, "binary value")
	})
}

// The R2 keys secret: only with StorageCredentialsSecretArn, and only by its full ARN.
func TestChecker_StorageCredentials(t *testing.T) {
	acct := pt.StartAccount(t)
	arn, err := acct.Secrets.Put("sandgate/r2-creds1", `{"accessKeyId":"r2key","secretAccessKey":"r2secret"}`)
	if err != nil {
		t.Fatal(err)
	}
	badARN, err := acct.Secrets.Put("sandgate/r2-broken", `{"accessKeyId":"r2key"}`)
	if err != nil {
		t.Fatal(err)
	}
	r2 := func(secretARN string) map[string]string {
		return with("StorageEndpoint", "https://0123456789abcdef.r2.cloudflarestorage.com", "StorageRegion", "auto", "StorageCredentialsSecretArn", secretARN)
	}
	rep := run(t, acct, acct.Operator, r2(arn))
	res := result(t, rep, preflight.CheckStorageCredentials)
	expect(t, res, preflight.OK, "accessKeyId and secretAccessKey present")
	if strings.Contains(fmt.Sprint(res), "r2secret") {
		t.Fatal("the result shows the secret key")
	}
	expect(t, result(t, rep, preflight.CheckBucket), preflight.Skip, "not on AWS S3")

	partial := "arn:aws:secretsmanager:" + pt.Region + ":" + pt.AccountID + ":secret:sandgate/r2-creds1"
	expect(t, check(t, acct, preflight.CheckStorageCredentials, r2(partial)), preflight.Fail, "not the secret's full ARN", "StorageCredentialsSecretArn="+arn)
	expect(t, check(t, acct, preflight.CheckStorageCredentials, r2(badARN)), preflight.Fail, "not JSON with non-empty accessKeyId and secretAccessKey")
	expect(t, check(t, acct, preflight.CheckStorageCredentials, r2("")), preflight.Fail, "S3CompatibleStoreNeedsCredentials")
	missing := "arn:aws:secretsmanager:" + pt.Region + ":" + pt.AccountID + ":secret:sandgate/r2-gone-AbCdEf"
	expect(t, check(t, acct, preflight.CheckStorageCredentials, r2(missing)), preflight.Fail, "no secret "+missing)
}

func TestChecker_SandboxImage(t *testing.T) {
	acct := pt.StartAccount(t)
	pinned := pt.AccountID + ".dkr.ecr." + pt.Region + ".amazonaws.com/" + pt.Repository + "@" + pt.IndexDigest
	t.Run("index with arm64, immutable tags", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.OK,
			pt.IndexDigest, "an image index for linux/amd64, linux/arm64", "IMMUTABLE", "SandboxImage="+pinned)
	})
	t.Run("mutable tags: pin by digest", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:DescribeRepositories", pt.Answer{Body: pt.DescribeRepositories("MUTABLE")})
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.Warn, "tags can move", "pin by digest: SandboxImage="+pinned)
	})
	t.Run("pinned by digest", func(t *testing.T) {
		acct.Replay.Reset()
		expect(t, check(t, acct, preflight.CheckSandboxImage, with("SandboxImage", pinned)), preflight.OK, "pinned by digest")
		for _, c := range acct.Replay.Calls() {
			if c == "ecr:DescribeRepositories" {
				t.Fatal("a pinned image needs no tag mutability")
			}
		}
	})
	t.Run("amd64 only", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:BatchGetImage", pt.Answer{Body: pt.BatchGetImage(pt.IndexDigest, "application/vnd.oci.image.index.v1+json", pt.Index("amd64"))})
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.Fail,
			"has no linux/arm64 image", "CpuArchitecture ARM64", "make image")
	})
	t.Run("single platform arm64", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:DescribeImages", pt.Answer{Body: pt.DescribeImagesSingle})
		acct.Replay.Override(t, "ecr:BatchGetImage", pt.Answer{Body: pt.BatchGetImage(pt.Arm64Digest, "application/vnd.oci.image.manifest.v1+json", pt.Manifest)})
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.OK, pt.Arm64Digest, "a single-platform image for linux/arm64")
	})
	t.Run("single platform amd64", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:DescribeImages", pt.Answer{Body: pt.DescribeImagesSingle})
		acct.Replay.Override(t, "ecr:BatchGetImage", pt.Answer{Body: pt.BatchGetImage(pt.Arm64Digest, "application/vnd.oci.image.manifest.v1+json", pt.Manifest)})
		acct.Replay.Override(t, "ecr:blob", pt.Answer{ContentType: "application/json", Body: pt.ImageConfig("amd64")})
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.Fail, "for linux/amd64", "has no linux/arm64 image")
	})
	t.Run("no repository", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:DescribeImages", pt.NoRepository)
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.Fail,
			"no ECR repository sandgate-sandbox in account 123456789012, region eu-west-1", "make image IMAGE_REPO=sandgate-sandbox")
	})
	t.Run("no such tag", func(t *testing.T) {
		acct.Replay.Override(t, "ecr:DescribeImages", pt.NoImage)
		expect(t, check(t, acct, preflight.CheckSandboxImage, base()), preflight.Fail, "has no image tagged "+pt.Tag, "make image")
	})
	t.Run("another account's registry", func(t *testing.T) {
		other := "210987654321.dkr.ecr.eu-west-1.amazonaws.com/sandgate-sandbox:" + pt.Tag
		expect(t, check(t, acct, preflight.CheckSandboxImage, with("SandboxImage", other)), preflight.Fail,
			"in account 210987654321, region eu-west-1", "may pull from arn:aws:ecr:eu-west-1:123456789012:repository/* only", "AWS_REGION=eu-west-1 make image")
	})
	t.Run("another region's registry", func(t *testing.T) {
		other := pt.AccountID + ".dkr.ecr.us-east-1.amazonaws.com/sandgate-sandbox:" + pt.Tag
		expect(t, check(t, acct, preflight.CheckSandboxImage, with("SandboxImage", other)), preflight.Fail, "region us-east-1", "no sandbox would start")
	})
	t.Run("not ECR", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSandboxImage, with("SandboxImage", "public.ecr.aws/example/sandbox:1")), preflight.Warn, "not in a private ECR registry")
	})
	t.Run("not an image reference", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSandboxImage, with("SandboxImage", "sandbox")), preflight.Fail, "not registry/repository")
	})
}

func TestParseImageRef(t *testing.T) {
	for in, want := range map[string]preflight.ImageRef{
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com/sandgate-sandbox:3f2a": {Registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
			Repository: "sandgate-sandbox", Tag: "3f2a", Account: "123456789012", Region: "eu-west-1"},
		"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/team/sandbox@sha256:ab": {Registry: "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
			Repository: "team/sandbox", Digest: "sha256:ab", Account: "123456789012", Region: "cn-north-1"},
		"localhost:5000/sandbox":  {Registry: "localhost:5000", Repository: "sandbox", Tag: "latest"},
		"ghcr.io/o/r:1@sha256:cd": {Registry: "ghcr.io", Repository: "o/r", Tag: "1", Digest: "sha256:cd"},
	} {
		got, err := preflight.ParseImageRef(in)
		if err != nil || got != want {
			t.Errorf("ParseImageRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"sandbox", "ubuntu:24.04", "ghcr.io/", "ghcr.io/o/r@md5:1"} {
		if got, err := preflight.ParseImageRef(in); err == nil {
			t.Errorf("ParseImageRef(%q) = %+v, want an error", in, got)
		}
	}
}

func TestChecker_Subnets(t *testing.T) {
	acct := pt.StartAccount(t)
	t.Run("NAT in two zones, gateway endpoints", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.OK,
			"2 subnet(s) in "+pt.VPC+", 2 availability zone(s)", "→ "+pt.NATGatewayA, "dynamodb (gateway), s3 (gateway)",
			"no endpoint for ecr.api", "function URL")
	})
	t.Run("no such subnet", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeSubnets", pt.NoSubnet("subnet-0deadbeef0000000"))
		expect(t, check(t, acct, preflight.CheckSubnets, with("SubnetIds", "subnet-0deadbeef0000000")), preflight.Fail,
			"The subnet ID 'subnet-0deadbeef0000000' does not exist", "SubnetIds output")
	})
	t.Run("public subnet", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeSubnets", pt.Answer{Body: pt.DescribeSubnets(pt.PublicSubnet)})
		expect(t, check(t, acct, preflight.CheckSubnets, with("SubnetIds", pt.PublicSubnet)), preflight.Fail,
			pt.PublicSubnet+" cannot reach the internet", "→ "+pt.IGW, "public IP", "function URL", "execute-api", "--nat-gateway-id")
	})
	t.Run("no default route", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeRouteTables", pt.Answer{Body: pt.DescribeRouteTables(
			pt.RouteTable{ID: pt.PrivateTableA, Subnet: pt.SubnetA}, pt.PrivateRoute(pt.NATGatewayB))})
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.Fail,
			pt.SubnetA+" (eu-west-1a): route table "+pt.PrivateTableA+" has no 0.0.0.0/0 route", pt.SubnetA+" cannot reach the internet")
	})
	t.Run("blackhole", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeRouteTables", pt.Answer{Body: pt.DescribeRouteTables(
			pt.PrivateRoute(pt.NATGatewayA), pt.RouteTable{ID: pt.PrivateTableB, Subnet: pt.SubnetB, DefaultRoute: pt.BlackholeRoute(pt.NATGatewayB)})})
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.Fail, "blackhole", pt.SubnetB+" cannot reach the internet")
	})
	t.Run("execute-api endpoint with private DNS", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeVpcEndpoints", pt.Answer{Body: pt.DescribeVpcEndpoints(
			pt.GatewayEndpoint("s3"), pt.InterfaceEndpoint("vpce-0a1b2c3d4e5f6e0a1", "execute-api", true))})
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.Fail,
			"vpce-0a1b2c3d4e5f6e0a1", "private DNS on", "403", "modify-vpc-endpoint --vpc-endpoint-id vpce-0a1b2c3d4e5f6e0a1 --no-private-dns-enabled")
	})
	t.Run("interface endpoints", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeVpcEndpoints", pt.Answer{Body: pt.DescribeVpcEndpoints(
			pt.GatewayEndpoint("dynamodb"), pt.InterfaceEndpoint("vpce-0a1b2c3d4e5f6e0a2", "ecr.api", true),
			pt.InterfaceEndpoint("vpce-0a1b2c3d4e5f6e0a3", "ecr.dkr", true), pt.InterfaceEndpoint("vpce-0a1b2c3d4e5f6e0a4", "execute-api", false))})
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.OK,
			"dynamodb (gateway), ecr.api (interface), ecr.dkr (interface)", "no endpoint for s3, logs")
	})
	t.Run("gateway endpoint off a subnet's table", func(t *testing.T) {
		other := strings.ReplaceAll(pt.GatewayEndpoint("s3"), "<item>"+pt.PrivateTableB+"</item>", "")
		acct.Replay.Override(t, "ec2:DescribeVpcEndpoints", pt.Answer{Body: pt.DescribeVpcEndpoints(other)})
		expect(t, check(t, acct, preflight.CheckSubnets, base()), preflight.OK, "s3 (gateway, not on "+pt.PrivateTableB+")")
	})
	t.Run("one zone", func(t *testing.T) {
		acct.Replay.Override(t, "ec2:DescribeSubnets", pt.Answer{Body: pt.DescribeSubnets(pt.SubnetA)})
		expect(t, check(t, acct, preflight.CheckSubnets, with("SubnetIds", pt.SubnetA)), preflight.Warn, "1 availability zone(s)", "second availability zone")
	})
}

// The bucket, against the local S3; its public access block (which s3local does not
// serve) and a wrong region's redirect are recorded answers.
func TestChecker_Bucket(t *testing.T) {
	acct := pt.StartAccount(t)
	t.Run("blocked, versioning never enabled", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckBucket, base()), preflight.OK,
			"bucket "+pt.Bucket+" (eu-west-1) blocks all public access; versioning never enabled", "put-bucket-versioning")
	})
	t.Run("versioning enabled", func(t *testing.T) {
		c := s3.NewFromConfig(acct.Config(t, acct.Operator), func(o *s3.Options) { o.UsePathStyle = true })
		if _, err := c.PutBucketVersioning(context.Background(), &s3.PutBucketVersioningInput{Bucket: aws.String(pt.Bucket),
			VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
			t.Fatal(err)
		}
		res := check(t, acct, preflight.CheckBucket, base())
		expect(t, res, preflight.OK, "versioning Enabled")
		if len(res.Details) != 0 {
			t.Fatalf("details %q", res.Details)
		}
	})
	t.Run("no such bucket", func(t *testing.T) {
		expect(t, check(t, acct, preflight.CheckBucket, with("BucketName", "sandgate-nowhere")), preflight.Fail,
			"no bucket sandgate-nowhere", "aws s3api create-bucket --bucket sandgate-nowhere --region eu-west-1 --create-bucket-configuration LocationConstraint=eu-west-1")
	})
	t.Run("no public access block", func(t *testing.T) {
		acct.Replay.Override(t, "s3:GetPublicAccessBlock", pt.NoPublicAccessBlock)
		expect(t, check(t, acct, preflight.CheckBucket, base()), preflight.Fail, "has no public access block",
			"put-public-access-block --bucket "+pt.Bucket+" --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true")
	})
	t.Run("partial public access block", func(t *testing.T) {
		acct.Replay.Override(t, "s3:GetPublicAccessBlock", pt.Answer{Body: pt.PublicAccessBlock(true, true, false, false)})
		expect(t, check(t, acct, preflight.CheckBucket, base()), preflight.Fail, "off: BlockPublicPolicy, RestrictPublicBuckets")
	})
	t.Run("another region", func(t *testing.T) {
		acct.Replay.Override(t, "s3:HeadBucket", pt.BucketElsewhere("us-west-2"))
		expect(t, check(t, acct, preflight.CheckBucket, base()), preflight.Fail, "is in us-west-2, but the stack would address it in eu-west-1", "StorageRegion=us-west-2")
	})
	t.Run("StorageRegion names the bucket's region", func(t *testing.T) {
		acct.Replay.Override(t, "s3:HeadBucket", pt.Answer{Header: map[string]string{"X-Amz-Bucket-Region": "us-west-2"}})
		expect(t, check(t, acct, preflight.CheckBucket, with("StorageRegion", "us-west-2")), preflight.OK, "(us-west-2) blocks all public access")
	})
}

func TestChecker_LambdaConcurrency(t *testing.T) {
	acct := pt.StartAccount(t)
	t.Run("new account's 10", func(t *testing.T) {
		acct.Replay.Override(t, "lambda:GetAccountSettings", pt.Answer{Body: pt.GetAccountSettings(10, 10)})
		expect(t, check(t, acct, preflight.CheckLambdaConcurrency, base()), preflight.Warn,
			"10 concurrent executions", "--service-code lambda --quota-code L-B99A9384 --desired-value 1000 --region eu-west-1")
	})
	// A template that reserves: the reservation must leave Lambda's 100 unreserved.
	const tpl = `Parameters:
  Reserve: {Type: Number, Default: 50}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties: {Handler: bootstrap, ReservedConcurrentExecutions: !Ref Reserve}
`
	reserving := func(t *testing.T) preflight.Result {
		t.Helper()
		st, err := preflight.ParseStack([]byte(tpl), nil)
		if err != nil {
			t.Fatal(err)
		}
		st.Region = pt.Region
		return result(t, preflight.New(acct.Config(t, acct.Operator), st).Run(context.Background()), preflight.CheckLambdaConcurrency)
	}
	t.Run("reservation fits", func(t *testing.T) {
		expect(t, reserving(t), preflight.OK, "the stack reserves 50 and leaves 950", "Fn 50")
	})
	t.Run("reservation does not fit", func(t *testing.T) {
		acct.Replay.Override(t, "lambda:GetAccountSettings", pt.Answer{Body: pt.GetAccountSettings(120, 120)})
		expect(t, reserving(t), preflight.Fail, "reserves 50 of 120 unreserved", "at least 100", "--desired-value 150")
	})
}

func TestChecker_Fargate(t *testing.T) {
	acct := pt.StartAccount(t)
	t.Run("quota too small", func(t *testing.T) {
		acct.Replay.Override(t, "servicequotas:GetServiceQuota", pt.Answer{Body: pt.GetServiceQuota("L-3032A538", "Fargate On-Demand vCPU resource count", 6)})
		expect(t, check(t, acct, preflight.CheckFargate, with("MaxSandboxes", "200", "SandboxCpu", "1024")), preflight.Fail,
			"is 6 vCPU; the stack needs 200 (MaxSandboxes 200 × SandboxCpu 1024 / 1024)",
			"--service-code fargate --quota-code L-3032A538 --desired-value 200 --region eu-west-1", "lower MaxSandboxes to 6")
	})
	t.Run("fractional need", func(t *testing.T) {
		acct.Replay.Override(t, "servicequotas:GetServiceQuota", pt.Answer{Body: pt.GetServiceQuota("L-3032A538", "Fargate On-Demand vCPU resource count", 0.5)})
		expect(t, check(t, acct, preflight.CheckFargate, with("MaxSandboxes", "3", "SandboxCpu", "256")), preflight.Fail,
			"is 0.5 vCPU; the stack needs 0.75", "--desired-value 1", "lower MaxSandboxes to 2")
	})
	t.Run("no applied value: the AWS default", func(t *testing.T) {
		acct.Replay.Override(t, "servicequotas:GetServiceQuota", pt.NoSuchQuota)
		acct.Replay.Override(t, "servicequotas:GetAWSDefaultServiceQuota", pt.Answer{Body: pt.GetServiceQuota("L-3032A538", "Fargate On-Demand vCPU resource count", 6)})
		expect(t, check(t, acct, preflight.CheckFargate, base()), preflight.Fail, "is 6 vCPU (the AWS default); the stack needs 25")
	})
	t.Run("Fargate Spot on ARM64", func(t *testing.T) {
		acct.Replay.Override(t, "servicequotas:GetServiceQuota", pt.Answer{Body: pt.GetServiceQuota("L-36FBB829", "Fargate Spot vCPU resource count", 100)})
		expect(t, check(t, acct, preflight.CheckFargate, with("CapacityProvider", "FARGATE_SPOT")), preflight.Warn,
			"Fargate Spot vCPU resource count (L-36FBB829)", "platform version 1.4.0 or later", "ARM64 tasks do not support Fargate Spot", "CapacityProvider=FARGATE")
	})
}
