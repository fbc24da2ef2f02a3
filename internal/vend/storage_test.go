package vend_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/r2creds"
	"github.com/sandgate/sandgate/internal/vend"
)

type fakeSecrets struct {
	reads atomic.Int32
	value string
}

func (f *fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.reads.Add(1)
	return &secretsmanager.GetSecretValueOutput{ARN: in.SecretId, SecretString: aws.String(f.value)}, nil
}

// R2 credentials are minted for the user's prefix only (trailing slash kept), for the
// bucket, signed by the parent key the minter alone reads, which is read again only
// after ParentTTL.
func TestR2Minter_Mint_ScopedToPrefix(t *testing.T) {
	clock := testkit.NewClock()
	secrets := &fakeSecrets{value: `{"accessKeyId":"parentkey","secretAccessKey":"parentsecret"}`}
	m := &vend.R2Minter{Secrets: secrets, SecretID: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:r2-AbCdEf",
		Endpoint: "https://0123abcd.r2.cloudflarestorage.com", Bucket: "sandgate-data", Now: clock.Now}
	c, err := m.Mint(context.Background(), "users/user_alice/", time.Hour+500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want, err := r2creds.MintAt(r2creds.Parent{AccessKeyID: "parentkey", SecretAccessKey: "parentsecret", AccountID: "0123abcd",
		Endpoint: "https://0123abcd.r2.cloudflarestorage.com"},
		r2creds.Scope{Bucket: "sandgate-data", Permission: r2creds.ObjectReadWrite, Prefixes: []string{"users/user_alice/"}}, time.Hour, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID != want.AccessKeyID || c.SecretAccessKey != want.SecretAccessKey || c.SessionToken != want.SessionToken || !c.Expiration.Equal(want.Expires) {
		t.Errorf("minted %+v, want %+v", c, want)
	}
	tok, _ := base64.StdEncoding.DecodeString(c.SessionToken)
	parts := strings.Split(strings.TrimPrefix(string(tok), r2creds.TokenPrefix), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims r2creds.Claims
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Paths == nil ||
		len(claims.Paths.PrefixPaths) != 1 || claims.Paths.PrefixPaths[0] != "users/user_alice/" || claims.Bucket != "sandgate-data" {
		t.Errorf("claims %+v (%v)", claims, err)
	}
	if strings.Contains(string(tok), "parentsecret") {
		t.Error("the parent secret is in the token")
	}
	m.Mint(context.Background(), "users/user_bob/", time.Hour)
	if n := secrets.reads.Load(); n != 1 {
		t.Errorf("%d reads of the secret, want 1", n)
	}
	clock.Advance(vend.DefaultParentTTL)
	m.Mint(context.Background(), "users/user_bob/", time.Hour)
	if n := secrets.reads.Load(); n != 2 {
		t.Errorf("%d reads of the secret after its TTL, want 2", n)
	}
}

func TestLoadConfig(t *testing.T) {
	base := map[string]string{
		vend.EnvTable: "t", vend.EnvTaskRole: "arn:aws:iam::123456789012:role/sandgate-TaskRole-1A",
		vend.EnvSandboxRole: "arn:aws:iam::123456789012:role/sandgate-SandboxRole-1A", vend.EnvCluster: "c",
	}
	env := config.New(config.Map(base))
	c := vend.LoadConfig(env)
	if env.Err() != nil || c.SessionDuration != time.Hour || c.StorageSecret != "" {
		t.Fatalf("%+v %v", c, env.Err())
	}
	bad := map[string]string{vend.EnvSessionDuration: "2h", vend.EnvBucket: "b", vend.EnvTaskRole: "arn:aws:iam::123456789012:user/x"}
	for k, v := range base {
		if _, ok := bad[k]; !ok {
			bad[k] = v
		}
	}
	env = config.New(config.Map(bad))
	vend.LoadConfig(env)
	for _, name := range []string{vend.EnvSessionDuration, vend.EnvStorageSecret, vend.EnvTaskRole} {
		if err := env.Err(); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("Err = %v, want one naming %s", err, name)
		}
	}
}
