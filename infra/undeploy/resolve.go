package undeploy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/smithy-go"
)

// StartFunctions are the logical ids of the functions that start sandboxes: the ones
// whose roles may call ecs:RunTask (users' sandboxes on a connect or a prewarm, warm
// pool tasks on the pool's refill; the Message function has a sandbox started through
// the Connect function). infra/templatecheck holds this list to the template.
var StartFunctions = []string{"ConnectFunction", "PrewarmFunction", "PoolFunction"}

// ClusterResource is the logical id of the cluster the sandboxes run in.
const ClusterResource = "Cluster"

// Target is a deployed stack's resources that undeploying touches.
type Target struct {
	// Stack is the CloudFormation stack's name.
	Stack string
	// Cluster is the sandboxes' ECS cluster (its name); "" when the stack has none.
	Cluster string
	// StartFunctions are the names of the functions that start sandboxes, by logical id
	// (StartFunctions); one the stack does not have is absent.
	StartFunctions map[string]string
}

// CloudFormationAPI is what Resolve calls.
type CloudFormationAPI interface {
	DescribeStackResource(context.Context, *cloudformation.DescribeStackResourceInput, ...func(*cloudformation.Options)) (*cloudformation.DescribeStackResourceOutput, error)
}

// ErrNoStack: CloudFormation knows no stack of that name in the region.
var ErrNoStack = errors.New("no such stack")

// Resolve finds stack's cluster and start functions with
// cloudformation:DescribeStackResource, one call per resource. A resource the stack
// lacks (a stack that failed to create) is left out; a stack that does not exist is
// ErrNoStack.
func Resolve(ctx context.Context, api CloudFormationAPI, stack string) (Target, error) {
	t := Target{Stack: stack, StartFunctions: map[string]string{}}
	for _, id := range append([]string{ClusterResource}, StartFunctions...) {
		out, err := api.DescribeStackResource(ctx, &cloudformation.DescribeStackResourceInput{
			StackName: aws.String(stack), LogicalResourceId: aws.String(id)})
		var ae smithy.APIError
		switch {
		case errors.As(err, &ae) && ae.ErrorCode() == "ValidationError" && strings.HasPrefix(ae.ErrorMessage(), "Stack with id "):
			// "Stack with id <name> does not exist"
			return Target{}, fmt.Errorf("stack %s: %w: %s", stack, ErrNoStack, ae.ErrorMessage())
		case errors.As(err, &ae) && ae.ErrorCode() == "ValidationError":
			// "Resource <id> does not exist for stack <name>"
			continue
		case err != nil:
			return Target{}, fmt.Errorf("describe %s of stack %s: %w", id, stack, err)
		}
		physical := ""
		if out.StackResourceDetail != nil {
			physical = aws.ToString(out.StackResourceDetail.PhysicalResourceId)
		}
		if physical == "" {
			continue // not created (yet, or any more)
		}
		if id == ClusterResource {
			t.Cluster = physical
		} else {
			t.StartFunctions[id] = physical
		}
	}
	return t, nil
}
