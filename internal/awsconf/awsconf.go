package awsconf

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Defaults for the shared HTTP client.
const (
	// DefaultTimeout bounds one HTTP attempt, so a hung endpoint costs a retry, not
	// the whole Lambda invocation.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxIdleConnsPerHost keeps connections to one endpoint warm across the
	// parallel transfers of a restore or sync.
	DefaultMaxIdleConnsPerHost = 64
)

// Load returns the process's AWS configuration from the default chain (environment,
// shared files, container or Lambda credentials) plus what every sandgate client needs:
//   - an *awshttp.BuildableClient, which keeps working when AWS_CA_BUNDLE is set (a
//     plain *http.Client makes LoadDefaultConfig fail then);
//   - request checksums and response checksum validation only when an operation
//     requires them: Cloudflare R2 and other S3-compatible stores reject the newer
//     SDK's default CRC32 headers, and stores that do not understand aws-chunked
//     bodies would save the trailer as data.
//
// optFns are applied after these, so callers (tests, the local stack) may override any.
func Load(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := append([]func(*config.LoadOptions) error{
		config.WithHTTPClient(NewHTTPClient()),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}, optFns...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load aws config: %w", err)
	}
	return cfg, nil
}

// NewHTTPClient returns the HTTP client Load installs.
func NewHTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithTimeout(DefaultTimeout).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
		})
}

// Loopback returns options for a client of an emulator at endpoint (for example
// http://127.0.0.1:8000): that base endpoint, static test credentials and a fixed
// region, so nothing from the developer's own AWS profile leaks into tests.
func Loopback(endpoint string) []func(*config.LoadOptions) error {
	return []func(*config.LoadOptions) error{
		config.WithRegion("us-east-1"),
		config.WithBaseEndpoint(endpoint),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")),
		// Ignore ~/.aws so a developer's profile cannot redirect or sign test traffic.
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	}
}
