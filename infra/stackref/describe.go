package stackref

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/smithy-go"
)

// ErrNoStack: CloudFormation knows no stack of that name in the region.
var ErrNoStack = errors.New("no such stack")

// DescribeAPI is the CloudFormation call Describe makes.
type DescribeAPI interface {
	DescribeStacks(context.Context, *cloudformation.DescribeStacksInput, ...func(*cloudformation.Options)) (*cloudformation.DescribeStacksOutput, error)
}

// Described is a deployed stack's outputs and parameters, by name.
type Described struct {
	Status     string
	Outputs    map[string]string
	Parameters map[string]string
}

// Describe reads stack's outputs and parameters with one cloudformation:DescribeStacks.
// A stack that does not exist is ErrNoStack.
func Describe(ctx context.Context, api DescribeAPI, stack string) (*Described, error) {
	out, err := api.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(stack)})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "ValidationError" && strings.Contains(ae.ErrorMessage(), "does not exist") {
		return nil, fmt.Errorf("stack %s: %w: %s", stack, ErrNoStack, ae.ErrorMessage())
	}
	if err != nil {
		return nil, fmt.Errorf("describe stack %s: %w", stack, err)
	}
	if len(out.Stacks) == 0 {
		return nil, fmt.Errorf("stack %s: %w", stack, ErrNoStack)
	}
	st := out.Stacks[0]
	d := &Described{Status: string(st.StackStatus), Outputs: map[string]string{}, Parameters: map[string]string{}}
	for _, o := range st.Outputs {
		d.Outputs[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	for _, p := range st.Parameters {
		v := aws.ToString(p.ResolvedValue)
		if v == "" {
			v = aws.ToString(p.ParameterValue)
		}
		d.Parameters[aws.ToString(p.ParameterKey)] = v
	}
	return d, nil
}
