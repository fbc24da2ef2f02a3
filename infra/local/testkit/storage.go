package testkit

import (
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/stack"
)

// StorageAs returns a client of the stack's bucket endpoint signed with creds and set
// up as a sandbox's is (path style; region auto in R2 mode; checksums only where an
// operation needs one, as R2 wants), making one attempt: what a compromised agent
// holding creds can send.
func (s *Stack) StorageAs(creds aws.CredentialsProvider) *s3.Client {
	return s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
		o.Credentials = creds
		if s.R2 != nil {
			o.Region = stack.R2Region
		}
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.RetryMaxAttempts = 1
	})
}

// StatusCode returns the HTTP status an SDK call failed with (0 when err carries
// none): what tells a refusal from a miss when a HEAD answer has no error code.
func StatusCode(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
