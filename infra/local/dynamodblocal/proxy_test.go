package dynamodblocal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/logging"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// A stock client behind the proxy logs no checksum warning on a 4xx, which it does
// against the emulator directly.
func TestChecksumProxy_StockClientSeesNoMismatch(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	proxy, err := dynamodblocal.NewChecksumProxy(srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	ctx := context.Background()
	for name, endpoint := range map[string]string{"direct": srv.Endpoint(), "proxied": proxy.Endpoint()} {
		var logs bytes.Buffer
		cfg, err := awsconf.Load(ctx, awsconf.Loopback(endpoint)...)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Logger = logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
			fmt.Fprintf(&logs, string(c)+" "+format+"\n", v...)
		})
		client := dynamodb.NewFromConfig(cfg) // stock: no ClientOptions
		_, err = client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("no-such-table-" + name)})
		var nf *types.ResourceNotFoundException
		if !errors.As(err, &nf) {
			t.Fatalf("%s: DescribeTable = %v, want ResourceNotFoundException", name, err)
		}
		warned := strings.Contains(logs.String(), "checksum")
		if want := name == "direct"; warned != want {
			t.Errorf("%s: checksum warning logged = %v, want %v; logs:\n%s", name, warned, want, logs.String())
		}
	}
}
