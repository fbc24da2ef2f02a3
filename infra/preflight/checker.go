package preflight

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// The calls each check makes: every one of them reads, none writes.

// STSAPI is the credentials check's.
type STSAPI interface {
	GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// IAMAPI is the service-linked role check's.
type IAMAPI interface {
	GetRole(context.Context, *iam.GetRoleInput, ...func(*iam.Options)) (*iam.GetRoleOutput, error)
}

// SecretsAPI is the secret checks'.
type SecretsAPI interface {
	GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// ECRAPI is the image check's.
type ECRAPI interface {
	DescribeRepositories(context.Context, *ecr.DescribeRepositoriesInput, ...func(*ecr.Options)) (*ecr.DescribeRepositoriesOutput, error)
	DescribeImages(context.Context, *ecr.DescribeImagesInput, ...func(*ecr.Options)) (*ecr.DescribeImagesOutput, error)
	BatchGetImage(context.Context, *ecr.BatchGetImageInput, ...func(*ecr.Options)) (*ecr.BatchGetImageOutput, error)
	GetDownloadUrlForLayer(context.Context, *ecr.GetDownloadUrlForLayerInput, ...func(*ecr.Options)) (*ecr.GetDownloadUrlForLayerOutput, error)
}

// EC2API is the subnet check's.
type EC2API interface {
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeRouteTables(context.Context, *ec2.DescribeRouteTablesInput, ...func(*ec2.Options)) (*ec2.DescribeRouteTablesOutput, error)
	DescribeVpcEndpoints(context.Context, *ec2.DescribeVpcEndpointsInput, ...func(*ec2.Options)) (*ec2.DescribeVpcEndpointsOutput, error)
}

// S3API is the bucket check's.
type S3API interface {
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	GetPublicAccessBlock(context.Context, *s3.GetPublicAccessBlockInput, ...func(*s3.Options)) (*s3.GetPublicAccessBlockOutput, error)
	GetBucketVersioning(context.Context, *s3.GetBucketVersioningInput, ...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error)
}

// LambdaAPI is the concurrency check's.
type LambdaAPI interface {
	GetAccountSettings(context.Context, *lambda.GetAccountSettingsInput, ...func(*lambda.Options)) (*lambda.GetAccountSettingsOutput, error)
}

// QuotasAPI is the Fargate check's.
type QuotasAPI interface {
	GetServiceQuota(context.Context, *servicequotas.GetServiceQuotaInput, ...func(*servicequotas.Options)) (*servicequotas.GetServiceQuotaOutput, error)
	GetAWSDefaultServiceQuota(context.Context, *servicequotas.GetAWSDefaultServiceQuotaInput, ...func(*servicequotas.Options)) (*servicequotas.GetAWSDefaultServiceQuotaOutput, error)
}

// Checker runs the checks of one stack against one account and region.
type Checker struct {
	Stack *Stack
	// Credentials, when set, are retrieved first, so missing credentials are reported
	// as such rather than as every call failing.
	Credentials aws.CredentialsProvider

	STS     STSAPI
	IAM     IAMAPI
	Secrets SecretsAPI
	// ECR returns a client of the registry's region (an image may live in another).
	ECR    func(region string) ECRAPI
	EC2    EC2API
	S3     S3API
	Lambda LambdaAPI
	Quotas QuotasAPI
	// HTTP fetches an image's configuration from the address ECR hands out, for a
	// single-platform image (http.DefaultClient when nil).
	HTTP aws.HTTPClient

	// account is the credentials' account, known once they are checked.
	account string
}

// New returns a Checker with clients of cfg for every service.
func New(cfg aws.Config, stack *Stack) *Checker {
	s3Client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		// An endpoint override is an emulator or a proxy: address it path-style.
		o.UsePathStyle = o.BaseEndpoint != nil
	})
	return &Checker{
		Stack:       stack,
		Credentials: cfg.Credentials,
		STS:         sts.NewFromConfig(cfg),
		IAM:         iam.NewFromConfig(cfg),
		Secrets:     secretsmanager.NewFromConfig(cfg),
		ECR: func(region string) ECRAPI {
			return ecr.NewFromConfig(cfg, func(o *ecr.Options) { o.Region = region })
		},
		EC2:    ec2.NewFromConfig(cfg),
		S3:     s3Client,
		Lambda: lambda.NewFromConfig(cfg),
		Quotas: servicequotas.NewFromConfig(cfg),
		// The SDK's own client: AWS_CA_BUNDLE and proxies apply to the fetch as well.
		HTTP: cfg.HTTPClient,
	}
}

// Run runs every check and returns the report. The parameter and credential checks
// come first; when the credentials do not work, the checks that need them are skipped.
func (c *Checker) Run(ctx context.Context) *Report {
	r := &Report{Region: c.Stack.Region}
	r.Results = append(r.Results, c.checkParameters())
	cred, who := c.checkCredentials(ctx)
	r.Results = append(r.Results, cred)
	checks := []struct {
		name string
		run  func(context.Context) Result
	}{
		{CheckServiceLinkedRole, c.checkServiceLinkedRole},
		{CheckSigningSecret, c.checkSigningSecret},
		{CheckStorageCredentials, c.checkStorageCredentials},
		{CheckSandboxImage, c.checkSandboxImage},
		{CheckSubnets, c.checkSubnets},
		{CheckBucket, c.checkBucket},
		{CheckLambdaConcurrency, c.checkLambdaConcurrency},
		{CheckFargate, c.checkFargate},
	}
	results := make([]Result, len(checks))
	if who == nil {
		for i, ch := range checks {
			results[i] = Result{Check: ch.name, Status: Skip, Summary: "not run: no working credentials (see credentials)"}
		}
		r.Results = append(r.Results, results...)
		return r
	}
	r.Account, r.Caller = aws.ToString(who.Account), aws.ToString(who.Arn)
	c.account = r.Account
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					results[i] = Result{Check: ch.name, Status: Fail, Summary: fmt.Sprintf("internal error in preflight: %v", p)}
				}
			}()
			results[i] = ch.run(ctx)
			results[i].Check = ch.name
		})
	}
	wg.Wait()
	r.Results = append(r.Results, results...)
	return r
}

// Unconfigured is the report of a run whose AWS configuration could not be loaded
// (a profile that does not exist, a malformed config file): the parameter check, the
// configuration's error as the credentials check's failure, and the rest skipped.
func Unconfigured(stack *Stack, err error) *Report {
	c := &Checker{Stack: stack}
	r := &Report{Region: stack.Region}
	r.Results = append(r.Results,
		c.checkParameters(),
		Result{Check: CheckCredentials, Status: Fail, Summary: "cannot load the AWS configuration: " + oneLine(err.Error()), Fix: fixCredentials})
	for _, name := range []string{CheckServiceLinkedRole, CheckSigningSecret, CheckStorageCredentials, CheckSandboxImage,
		CheckSubnets, CheckBucket, CheckLambdaConcurrency, CheckFargate} {
		r.Results = append(r.Results, Result{Check: name, Status: Skip, Summary: "not run: no working credentials (see credentials)"})
	}
	return r
}

// checkParameters reports what the template refuses or misses among the parameters.
func (c *Checker) checkParameters() Result {
	s := c.Stack
	res := Result{Check: CheckParameters, Status: OK, Summary: "the template accepts every parameter value"}
	res.Details = append(res.Details, s.Invalid...)
	for _, name := range s.Missing {
		res.Details = append(res.Details, name+": no value and no default")
	}
	for _, u := range s.Unreadable {
		res.Details = append(res.Details, "template: "+u)
	}
	switch {
	case len(s.Invalid) > 0 || len(s.Missing) > 0:
		res.Status = Fail
		var parts []string
		if len(s.Invalid) > 0 {
			parts = append(parts, fmt.Sprintf("the template refuses %d value(s)", len(s.Invalid)))
		}
		if len(s.Missing) > 0 {
			parts = append(parts, fmt.Sprintf("%d required parameter(s) have no value", len(s.Missing)))
		}
		res.Summary = strings.Join(parts, "; ")
		res.Fix = "set them in samconfig.toml's parameter_overrides (sam deploy --guided writes them) or pass -parameter-overrides 'Name=value …'"
	case len(s.Unreadable) > 0:
		res.Status = Warn
		res.Summary = "parts of the template could not be read; the checks that need them say so"
	}
	return res
}

// need returns a parameter's value, or the result of a check that cannot run without it.
func (c *Checker) need(name string) (string, *Result) {
	v, ok := c.Stack.Value(name)
	if !ok || v == "" {
		return "", &Result{Status: Skip, Summary: "not run: " + name + " has no value (see parameters)"}
	}
	return v, nil
}
