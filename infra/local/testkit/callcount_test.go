package testkit_test

import (
	"context"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

func TestCounter_APIOption_CountsCallsPerOperation(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	ctx := context.Background()
	cfg, err := srv.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counter := testkit.NewCallCounter()
	cfg.APIOptions = append(cfg.APIOptions, counter.APIOption) // every client of cfg
	c := dynamodb.NewFromConfig(cfg)

	for range 2 {
		if _, err := c.ListTables(ctx, &dynamodb.ListTablesInput{}); err != nil {
			t.Fatal(err)
		}
	}
	// A service error (HTTP 400, not retried) is still one call.
	if _, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("absent-table")}); err == nil {
		t.Fatal("DescribeTable of a missing table succeeded")
	}
	// Rejected by parameter validation before the wire: not a call.
	if _, err := c.GetItem(ctx, &dynamodb.GetItemInput{}); err == nil {
		t.Fatal("GetItem without a table succeeded")
	}

	if got := counter.Calls("DynamoDB", "ListTables"); got != 2 {
		t.Errorf("ListTables calls = %d, want 2", got)
	}
	if got := counter.Calls("DynamoDB", "DescribeTable"); got != 1 {
		t.Errorf("DescribeTable calls = %d, want 1", got)
	}
	if got := counter.Calls("DynamoDB", "GetItem"); got != 0 {
		t.Errorf("GetItem calls = %d, want 0 (invalid parameters)", got)
	}
	if got, att := counter.Calls("DynamoDB", ""), counter.Attempts("DynamoDB", ""); got != 3 || att != 3 {
		t.Errorf("DynamoDB calls, attempts = %d, %d; want 3, 3", got, att)
	}
	snap := counter.Snapshot()
	if len(snap) != 2 || snap[0].Operation != "DescribeTable" || snap[1].Operation != "ListTables" || snap[1].Calls != 2 {
		t.Errorf("Snapshot = %+v", snap)
	}
	counter.Reset()
	if got := counter.Calls("DynamoDB", ""); got != 0 || len(counter.Snapshot()) != 0 {
		t.Errorf("after Reset: %d calls, %+v", got, counter.Snapshot())
	}
}

func TestCounter_APIOption_ConcurrentCalls(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	counter := testkit.NewCallCounter()
	c, err := srv.Client(context.Background(), func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, counter.APIOption) // one client only
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 10 {
				if _, err := c.ListTables(context.Background(), &dynamodb.ListTablesInput{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := counter.Calls("DynamoDB", "ListTables"); got != 160 {
		t.Fatalf("calls = %d, want 160", got)
	}
}

// The emulator cannot be made to fail on demand, so SDK retries are provoked by a
// loopback server speaking DynamoDB's JSON protocol: two 500s, then an answer.
func TestCounter_APIOption_CountsRetriedAttempts(t *testing.T) {
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		body := []byte(`{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"try again"}`)
		status := http.StatusInternalServerError
		if hits.Add(1) > 2 {
			body, status = []byte(`{"TableNames":[]}`), http.StatusOK
		}
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	defer ts.Close()
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(ts.URL)...)
	if err != nil {
		t.Fatal(err)
	}
	counter := testkit.NewCallCounter()
	c := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, counter.APIOption)
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 3
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	if _, err := c.ListTables(context.Background(), &dynamodb.ListTablesInput{}); err != nil {
		t.Fatal(err)
	}
	if calls, att := counter.Calls("DynamoDB", "ListTables"), counter.Attempts("DynamoDB", "ListTables"); calls != 1 || att != 3 || hits.Load() != 3 {
		t.Fatalf("calls %d, attempts %d, server hits %d; want 1, 3, 3", calls, att, hits.Load())
	}
}
