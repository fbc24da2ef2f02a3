package stack

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// AWSEnvFile is the file, under the stack's root, that `make dev` writes for operators.
const AWSEnvFile = "aws.env"

// cliServices maps the AWS CLI's service names to the endpoint variables the stack
// serves. CLIs before 2.13 (Debian's awscli among them) read no
// AWS_ENDPOINT_URL_<SERVICE>, so the file's aws function passes the endpoint itself.
var cliServices = map[string]string{
	"dynamodb":       "AWS_ENDPOINT_URL_DYNAMODB",
	"s3":             "AWS_ENDPOINT_URL_S3",
	"s3api":          "AWS_ENDPOINT_URL_S3",
	"ecs":            "AWS_ENDPOINT_URL_ECS",
	"lambda":         "AWS_ENDPOINT_URL_LAMBDA",
	"sts":            "AWS_ENDPOINT_URL_STS",
	"secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
}

// AWSEnv returns a shell file that points the AWS CLI and every SDK at the stack as its
// operator: `source .sandgate/aws.env && aws dynamodb scan --table-name "$SANDGATE_TABLE"`.
// It holds the operator's secret key (in R2 mode the parent R2 key too): write it
// readable by its owner only.
func (s *Stack) AWSEnv() string {
	var b strings.Builder
	op := s.ids.operator
	fmt.Fprintf(&b, "# sandgate local stack: endpoints and an operator's credentials, rewritten by every make dev.\n")
	fmt.Fprintf(&b, "# Use: source %s && aws dynamodb scan --table-name \"$SANDGATE_TABLE\"\n", AWSEnvFile)
	fmt.Fprintf(&b, "unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CA_BUNDLE\n")
	fmt.Fprintf(&b, "export AWS_ACCESS_KEY_ID=%s\n", op.AccessKeyID)
	fmt.Fprintf(&b, "export AWS_SECRET_ACCESS_KEY=%s\n", op.SecretAccessKey)
	fmt.Fprintf(&b, "export AWS_REGION=%s AWS_DEFAULT_REGION=%s\n", Region, Region)
	// ~/.aws must not redirect or sign the local traffic.
	fmt.Fprintf(&b, "export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null\n")
	names := make([]string, 0, len(s.Endpoints))
	for k := range s.Endpoints {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "export %s=%s\n", k, s.Endpoints[k])
	}
	fmt.Fprintf(&b, "export SANDGATE_TABLE=%s SANDGATE_BUCKET=%s SANDGATE_CLUSTER=%s\n", s.Table, s.Bucket, s.Cluster)
	// What make admin needs besides: the stage's management endpoint (closing a
	// revoked user's connections) and the bucket's addressing.
	if s.Gateway != nil {
		fmt.Fprintf(&b, "export SANDGATE_MANAGEMENT_ENDPOINT=%s SANDGATE_STORAGE_PATH_STYLE=true\n", s.Gateway.ManagementEndpoint())
	}
	if s.R2 != nil {
		// R2 mode: the bucket answers the parent API token's key only (region auto), as
		// R2 does; the aws function below signs s3 and s3api with it.
		fmt.Fprintf(&b, "export SANDGATE_R2_ACCESS_KEY_ID=%s SANDGATE_R2_SECRET_ACCESS_KEY=%s\n", s.R2.AccessKeyID, s.R2.SecretAccessKey)
	}
	fmt.Fprintf(&b, "aws() {\n\tlocal ep=\n\tcase \"$1\" in\n")
	svcs := make([]string, 0, len(cliServices))
	for svc := range cliServices {
		svcs = append(svcs, svc)
	}
	sort.Strings(svcs)
	for _, svc := range svcs {
		fmt.Fprintf(&b, "\t%s) ep=\"$%s\" ;;\n", svc, cliServices[svc])
	}
	fmt.Fprintf(&b, "\tesac\n")
	if s.R2 != nil {
		fmt.Fprintf(&b, "\tcase \"$1\" in\n\ts3|s3api) AWS_ACCESS_KEY_ID=\"$SANDGATE_R2_ACCESS_KEY_ID\" AWS_SECRET_ACCESS_KEY=\"$SANDGATE_R2_SECRET_ACCESS_KEY\" "+
			"AWS_REGION=%s AWS_DEFAULT_REGION=%s command aws --endpoint-url \"$ep\" \"$@\"; return ;;\n\tesac\n", R2Region, R2Region)
	}
	fmt.Fprintf(&b, "\tcommand aws ${ep:+--endpoint-url \"$ep\"} \"$@\"\n}\n")
	return b.String()
}

// WriteAWSEnv writes AWSEnv to path, readable by its owner only.
func (s *Stack) WriteAWSEnv(path string) error {
	if err := os.WriteFile(path, []byte(s.AWSEnv()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}
