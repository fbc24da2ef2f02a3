package stack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/r2creds"
)

// R2 mode (Options.R2): the bucket is served as Cloudflare R2 serves it, and the stack
// is deployed with the template's R2 parameters, as an operator deploys it for R2:
// StorageEndpoint https://<account>.r2.cloudflarestorage.com, StorageRegion auto and
// StorageCredentialsSecretArn naming a Secrets Manager secret that holds the parent
// API token's S3 key. The template's own conditions then switch the functions and the
// task definition to R2; nothing in the product is told it runs locally.
const (
	// R2AccountID is the Cloudflare account the local R2 belongs to (32 hex digits,
	// as Cloudflare's account ids are).
	R2AccountID = "5a9d0c41e6b27f38a1d4c09e7b3f6a52"
	// R2SecretName is the secret holding the parent API token's S3 key, as JSON with
	// accessKeyId and secretAccessKey (the template's StorageCredentialsSecretArn).
	R2SecretName = "sandgate/r2-storage"
	// R2Region is what R2 expects as the signing region.
	R2Region = "auto"
)

// R2Endpoint is the public S3 endpoint of the local R2 account. The stack's functions
// and tasks are given it as the template gives it (STORAGE_ENDPOINT names the account
// and the temporary credentials' audience from it); where it is the endpoint their SDK
// dials (AWS_ENDPOINT_URL_S3), the stack puts the local server's URL, as DNS would
// resolve the name to Cloudflare.
func R2Endpoint() string { return "https://" + R2AccountID + ".r2.cloudflarestorage.com" }

// startR2 makes the parent API token — an Object Read & Write token scoped to the
// bucket, the least Cleanup's deletes and the vendor's minting need — and stores its
// S3 key in Secrets Manager. It returns the template parameters that deploy for R2.
func (s *Stack) startR2() (map[string]string, error) {
	key := make([]byte, 16+32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("r2: make the parent key: %w", err)
	}
	// R2's S3 keys: a 32-character access key id and a 64-character secret.
	p := r2creds.Parent{AccessKeyID: hex.EncodeToString(key[:16]), SecretAccessKey: hex.EncodeToString(key[16:]),
		AccountID: R2AccountID, Endpoint: R2Endpoint()}
	secret, err := json.Marshal(map[string]string{"accessKeyId": p.AccessKeyID, "secretAccessKey": p.SecretAccessKey})
	if err != nil {
		return nil, err
	}
	arn, err := s.ids.secrets.Put(R2SecretName, string(secret))
	if err != nil {
		return nil, fmt.Errorf("r2: store the parent key: %w", err)
	}
	s.R2 = &p
	return map[string]string{
		"StorageEndpoint":             p.Endpoint,
		"StorageRegion":               R2Region,
		"StorageCredentialsSecretArn": arn,
	}, nil
}

// r2Config is s3local's R2 mode for the parent token.
func (s *Stack) r2Config() *s3local.R2Config {
	return &s3local.R2Config{
		AccountID: s.R2.AccountID, AccessKeyID: s.R2.AccessKeyID, SecretAccessKey: s.R2.SecretAccessKey,
		Permission: r2creds.ObjectReadWrite, Buckets: []string{s.Bucket},
	}
}

// dialedEndpoints points the endpoint variables of a function's or task's environment
// that name the R2 endpoint at the local server instead: the address it is reached at,
// not what it is called.
func (s *Stack) dialedEndpoints(env map[string]string) {
	if s.R2 == nil || s.S3 == nil {
		return
	}
	for k, v := range env {
		if strings.HasPrefix(k, "AWS_ENDPOINT_URL") && strings.TrimSuffix(v, "/") == s.R2.Endpoint {
			env[k] = s.S3.URL()
		}
	}
}

// r2Client is an S3 client of the local R2 signed with the parent key: what an operator
// of an R2 deployment holds.
func (s *Stack) r2Client() *s3.Client {
	return s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.S3.URL())
		o.UsePathStyle = true
		o.Region = R2Region
		o.Credentials = credentials.NewStaticCredentialsProvider(s.R2.AccessKeyID, s.R2.SecretAccessKey, "")
		// R2 refuses the SDK's default CRC32 checksums (as s3bucket.NewClient sets too).
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}
