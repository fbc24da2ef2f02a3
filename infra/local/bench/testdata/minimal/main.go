// Command minimal is the smallest Go Lambda (aws-lambda-go, an echo handler): the
// baseline of the functions' bootstrap size and init time.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
}
