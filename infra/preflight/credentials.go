package preflight

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// checkCredentials retrieves the credentials and asks STS whose they are
// (sts:GetCallerIdentity needs no permission). It returns the identity when they work.
func (c *Checker) checkCredentials(ctx context.Context) (Result, *sts.GetCallerIdentityOutput) {
	res := Result{Check: CheckCredentials}
	if c.Stack.Region == "" {
		res.Status, res.Summary = Fail, "no region: the checks and the deploy need one"
		res.Fix = "pass -region, set region in samconfig.toml's deploy parameters, or export AWS_REGION"
		return res, nil
	}
	if c.Credentials != nil {
		if _, err := c.Credentials.Retrieve(ctx); err != nil {
			res.Status = Fail
			res.Summary = "no usable AWS credentials (environment, AWS_PROFILE's files, SSO, container and instance roles were tried): " + oneLine(err.Error())
			res.Fix = fixCredentials
			return res, nil
		}
	}
	who, err := c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		res = failed(CheckCredentials, "sts:GetCallerIdentity", err)
		if res.Fix == "" {
			res.Fix = fixCredentials
		}
		return res, nil
	}
	res.Status = OK
	res.Summary = fmt.Sprintf("%s (account %s)", aws.ToString(who.Arn), aws.ToString(who.Account))
	return res, who
}
