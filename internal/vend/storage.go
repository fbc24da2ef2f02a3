package vend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/internal/r2creds"
)

// DefaultParentTTL is how long the R2 parent key read from Secrets Manager is reused
// before it is read again (so a rotated key is picked up without a deploy).
const DefaultParentTTL = 5 * time.Minute

// Secrets is the part of the Secrets Manager client R2Minter uses.
type Secrets interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// R2Minter mints R2 temporary credentials for one prefix of the bucket, locally (no
// call to Cloudflare's API, which allows about 1,200 calls per 5 minutes), signed with
// the parent API token's key it alone reads, from the Secrets Manager secret whose
// JSON keys are accessKeyId and secretAccessKey.
type R2Minter struct {
	Secrets Secrets
	// SecretID is the secret's ARN.
	SecretID string
	// Endpoint is the R2 S3 endpoint (https://<account>.r2.cloudflarestorage.com); its
	// host's first label is the account.
	Endpoint string
	Bucket   string
	// ParentTTL is DefaultParentTTL when zero.
	ParentTTL time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time

	mu      sync.Mutex
	parent  r2creds.Parent
	readAt  time.Time
	hasRead bool
}

var _ StorageMinter = (*R2Minter)(nil)

// Mint returns credentials for keys under prefix only, read and write, valid for ttl
// (whole seconds).
func (m *R2Minter) Mint(ctx context.Context, prefix string, ttl time.Duration) (StorageCredentials, error) {
	p, err := m.parentKey(ctx)
	if err != nil {
		return StorageCredentials{}, err
	}
	ttl = ttl.Truncate(time.Second)
	c, err := r2creds.MintAt(p, r2creds.Scope{Bucket: m.Bucket, Permission: r2creds.ObjectReadWrite, Prefixes: []string{prefix}}, ttl, m.now())
	if err != nil {
		return StorageCredentials{}, err
	}
	return StorageCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Expiration: c.Expires.UTC()}, nil
}

// parentKey returns the parent key, read again once ParentTTL has passed.
func (m *R2Minter) parentKey(ctx context.Context) (r2creds.Parent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ttl := m.ParentTTL
	if ttl <= 0 {
		ttl = DefaultParentTTL
	}
	if m.hasRead && m.now().Sub(m.readAt) < ttl {
		return m.parent, nil
	}
	out, err := m.Secrets.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(m.SecretID)})
	if err != nil {
		return r2creds.Parent{}, fmt.Errorf("read the storage key: %w", err)
	}
	var keys struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if err := json.Unmarshal([]byte(aws.ToString(out.SecretString)), &keys); err != nil || keys.AccessKeyID == "" || keys.SecretAccessKey == "" {
		return r2creds.Parent{}, errors.New("read the storage key: the secret is not JSON with accessKeyId and secretAccessKey")
	}
	account, err := AccountOf(m.Endpoint)
	if err != nil {
		return r2creds.Parent{}, err
	}
	m.parent = r2creds.Parent{AccessKeyID: keys.AccessKeyID, SecretAccessKey: keys.SecretAccessKey, AccountID: account, Endpoint: m.Endpoint}
	m.readAt, m.hasRead = m.now(), true
	return m.parent, nil
}

// AccountOf returns the Cloudflare account of an R2 endpoint: the first label of its
// host (https://<account>.r2.cloudflarestorage.com, or .<jurisdiction>.r2…).
func AccountOf(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("storage endpoint %q: not a URL", endpoint)
	}
	account, _, ok := strings.Cut(u.Hostname(), ".")
	if !ok || account == "" {
		return "", fmt.Errorf("storage endpoint %q: no account in the host", endpoint)
	}
	return account, nil
}

func (m *R2Minter) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}
