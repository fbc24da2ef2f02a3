package s3bucket

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/sandgate/sandgate/internal/config"
)

// Defaults for Options.
const (
	// DefaultMaxAttempts bounds the tries of one request, the first included: with the
	// backoff below, a store that stays down for about half a minute fails the request.
	DefaultMaxAttempts = 6
	// DefaultMaxBackoff caps the jittered exponential delay between tries.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultResponseHeaderTimeout is how long a request may wait for the store's
	// answer after sending its body before it is abandoned and retried. It replaces an
	// overall timeout, which would also cut off large transfers that are making progress.
	DefaultResponseHeaderTimeout = 15 * time.Second
)

// Options are the client settings that vary between stores.
type Options struct {
	// UsePathStyle addresses buckets as <endpoint>/<bucket>/<key> instead of
	// <bucket>.<endpoint>/<key>: needed by gofakes3, MinIO and other stores without
	// per-bucket host names.
	UsePathStyle bool
	// Region overrides the configuration's region for this client; "auto" is what R2
	// expects. Empty keeps the configuration's.
	Region string
	// MaxAttempts is DefaultMaxAttempts when zero.
	MaxAttempts int
	// MaxBackoff is DefaultMaxBackoff when zero.
	MaxBackoff time.Duration
	// ResponseHeaderTimeout is DefaultResponseHeaderTimeout when zero.
	ResponseHeaderTimeout time.Duration
	// AccessKeyID and SecretAccessKey, when set, sign this client's requests instead of
	// the configuration's credentials (an R2 API token beside an AWS task role).
	AccessKeyID, SecretAccessKey string
	// Credentials, when set, sign this client's requests instead of both: temporary
	// credentials with a session token (R2's, see internal/r2creds, or a vendor's),
	// renewed by the provider.
	Credentials aws.CredentialsProvider
}

// Environment variables read by LoadOptions. The endpoint is the SDK's own
// AWS_ENDPOINT_URL_S3, so the same code reaches S3, R2 and the local stack.
const (
	EnvRegion          = "STORAGE_REGION"            // "auto" for R2; empty keeps AWS_REGION
	EnvPathStyle       = "STORAGE_PATH_STYLE"        // true for R2, MinIO, gofakes3
	EnvAccessKeyID     = "STORAGE_ACCESS_KEY_ID"     // with EnvSecretAccessKey: keys for the store only
	EnvSecretAccessKey = "STORAGE_SECRET_ACCESS_KEY" // (R2); unset, the process's AWS credentials are used
)

// LoadOptions reads the store's client options from e. The keys are deliberately not
// AWS_ACCESS_KEY_ID: those would replace the task role for DynamoDB and the management
// API too, when only the store (R2) needs other credentials.
func LoadOptions(e *config.Env) Options {
	o := Options{
		Region:          e.String(EnvRegion, ""),
		UsePathStyle:    e.Bool(EnvPathStyle, false),
		AccessKeyID:     e.String(EnvAccessKeyID, ""),
		SecretAccessKey: e.String(EnvSecretAccessKey, ""),
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		e.Check(EnvAccessKeyID, fmt.Errorf("set both %s and %s, or neither", EnvAccessKeyID, EnvSecretAccessKey))
	}
	return o
}

// NewClient returns an S3 client over cfg (from awsconf.Load) with o applied, and
// with what every store needs whatever cfg says:
//   - request checksums and response validation only when an operation requires
//     them (R2 and other stores reject the SDK's default CRC32 headers, and some store
//     aws-chunked bodies with their trailers as data);
//   - DeleteObjects sends Content-MD5 instead of the SDK's CRC32, which AWS accepts and
//     R2, MinIO, OCI and older stores require;
//   - a standard retryer with jittered exponential backoff that also retries 500s,
//     503s and answers that take longer than ResponseHeaderTimeout, without a retry
//     quota, since one sandbox owns the client;
//   - no overall HTTP timeout, which would cut off long transfers.
func NewClient(cfg aws.Config, o Options) *s3.Client {
	attempts := o.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	backoff := o.MaxBackoff
	if backoff <= 0 {
		backoff = DefaultMaxBackoff
	}
	headerTimeout := o.ResponseHeaderTimeout
	if headerTimeout <= 0 {
		headerTimeout = DefaultResponseHeaderTimeout
	}
	return s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.UsePathStyle = o.UsePathStyle
		if o.Region != "" {
			so.Region = o.Region
		}
		switch {
		case o.Credentials != nil:
			so.Credentials = o.Credentials
		case o.AccessKeyID != "":
			so.Credentials = credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")
		}
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		so.Retryer = retry.NewStandard(func(r *retry.StandardOptions) {
			r.MaxAttempts = attempts
			r.MaxBackoff = backoff
			r.RateLimiter = ratelimit.None
		})
		if bc, ok := so.HTTPClient.(*awshttp.BuildableClient); ok {
			so.HTTPClient = bc.WithTimeout(0).WithTransportOptions(func(t *http.Transport) {
				t.ResponseHeaderTimeout = headerTimeout
			})
		}
	})
}

// withPayloadHash makes one PutObject sign its payload with a SHA-256 the caller
// already computed. It must be set inside the operation's stack: the client clears
// stack values from the caller's context.
func withPayloadHash(sum string) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("sandgate.PayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
					middleware.FinalizeOutput, middleware.Metadata, error,
				) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, sum), in)
				}), middleware.Before)
		})
	}
}

// withContentMD5 makes one DeleteObjects call carry Content-MD5 in place of the
// flexible-checksum headers.
func withContentMD5(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Finalize.Insert(contentMD5{}, "Signing", middleware.Before)
	})
}

type contentMD5 struct{}

func (contentMD5) ID() string { return "sandgate.ContentMD5" }

func (contentMD5) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	req, ok := in.Request.(*smithyhttp.Request)
	if !ok || req.GetStream() == nil {
		return next.HandleFinalize(ctx, in)
	}
	body, err := io.ReadAll(req.GetStream())
	if err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("read delete request: %w", err)
	}
	if req, err = req.SetStream(bytes.NewReader(body)); err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("set delete request: %w", err)
	}
	sum := md5.Sum(body)
	req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
	for name := range req.Header {
		if l := strings.ToLower(name); strings.HasPrefix(l, "x-amz-checksum-") || l == "x-amz-sdk-checksum-algorithm" {
			req.Header.Del(name)
		}
	}
	in.Request = req
	return next.HandleFinalize(ctx, in)
}
