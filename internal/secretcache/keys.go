package secretcache

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Keys is a stored access key pair for an S3-compatible store (an R2 API token's S3
// keys): the secret's JSON {"accessKeyId": …, "secretAccessKey": …}.
type Keys struct {
	AccessKeyID, SecretAccessKey string
}

// ParseKeys parses a Keys secret. Its error never contains the keys.
func ParseKeys(s string) (Keys, error) {
	var k struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if err := json.Unmarshal([]byte(s), &k); err != nil || k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return Keys{}, errors.New("not JSON with accessKeyId and secretAccessKey")
	}
	return Keys{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey}, nil
}

// Credentials gives an SDK client the keys a Cache holds. Each set it hands out
// expires after the cache's Refresh, so the SDK asks again and a rotated key is used
// without a redeploy.
type Credentials struct {
	Cache *Cache[Keys]
}

var _ aws.CredentialsProvider = (*Credentials)(nil)

// Retrieve returns the keys held, or the cache's error.
func (p *Credentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	k, err := p.Cache.Get(ctx)
	if err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{
		AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, Source: "SecretsManager",
		CanExpire: true, Expires: p.Cache.now().Add(or(p.Cache.Refresh, DefaultRefresh)),
	}, nil
}
