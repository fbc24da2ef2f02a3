package notice

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// Invoker is the part of the Lambda client a Notifier and an Ensurer use.
type Invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

var _ Invoker = (*lambda.Client)(nil)

// Notifier sends notices to the Connect function as Event (asynchronous) invocations.
type Notifier struct {
	API Invoker
	// Function is the Connect function's name or ARN.
	Function string
}

// Send invokes the Connect function with n and returns once Lambda has queued it.
func (s *Notifier) Send(ctx context.Context, n Notice) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("send notice: %w", err)
	}
	payload, err := json.Marshal(Envelope{Notice: &n})
	if err != nil {
		return fmt.Errorf("send notice: %w", err)
	}
	_, err = s.API.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(s.Function),
		InvocationType: types.InvocationTypeEvent,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("send %s notice to %s: %w", n.Kind, s.Function, err)
	}
	return nil
}
