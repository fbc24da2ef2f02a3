package preflight

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// ECSServiceLinkedRole is the role ECS creates clusters with capacity providers under
// (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using-service-linked-roles.html).
// A new account may not have it yet; the stack's cluster then fails with "Unable to
// assume the service linked role".
const ECSServiceLinkedRole = "AWSServiceRoleForECS"

// checkServiceLinkedRole looks the role up with iam:GetRole.
func (c *Checker) checkServiceLinkedRole(ctx context.Context) Result {
	out, err := c.IAM.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(ECSServiceLinkedRole)})
	var missing *iamtypes.NoSuchEntityException
	switch {
	case errors.As(err, &missing):
		return Result{Status: Fail,
			Summary: ECSServiceLinkedRole + " does not exist: creating the cluster would fail (\"Unable to assume the service linked role\") and roll the stack back",
			Fix:     "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com"}
	case err != nil:
		return failed(CheckServiceLinkedRole, "iam:GetRole", err)
	}
	arn := ""
	if out.Role != nil {
		arn = aws.ToString(out.Role.Arn)
	}
	return Result{Status: OK, Summary: fmt.Sprintf("%s exists (%s)", ECSServiceLinkedRole, arn)}
}
