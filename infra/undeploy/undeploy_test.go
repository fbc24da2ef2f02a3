package undeploy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/undeploy"
)

// recordedResource is DescribeStackResource's answer as the CloudFormation API
// reference documents it (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStackResource.html).
const recordedResource = `<DescribeStackResourceResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeStackResourceResult>
    <StackResourceDetail>
      <StackId>arn:aws:cloudformation:eu-west-1:123456789012:stack/sandgate/aaf549a0-a413-11df-adb3-5081b3858e83</StackId>
      <StackName>sandgate</StackName>
      <LogicalResourceId>%s</LogicalResourceId>
      <PhysicalResourceId>%s</PhysicalResourceId>
      <ResourceType>%s</ResourceType>
      <LastUpdatedTimestamp>2026-12-01T10:27:28Z</LastUpdatedTimestamp>
      <ResourceStatus>CREATE_COMPLETE</ResourceStatus>
    </StackResourceDetail>
  </DescribeStackResourceResult>
  <ResponseMetadata>
    <RequestId>b9b4b068-3a41-11e5-94eb-example</RequestId>
  </ResponseMetadata>
</DescribeStackResourceResponse>`

// recordedError is the Query protocol's error document.
const recordedError = `<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <Error><Type>Sender</Type><Code>ValidationError</Code><Message>%s</Message></Error>
  <RequestId>c5a7e2d1-3a41-11e5-94eb-example</RequestId>
</ErrorResponse>`

// cloudFormation answers DescribeStackResource from resources (logical id → physical
// id and type) of the stack named stack, and records the calls.
type cloudFormation struct {
	stack     string
	resources map[string][2]string
	mu        sync.Mutex
	calls     []string
}

func (c *cloudFormation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	c.mu.Lock()
	c.calls = append(c.calls, form.Get("Action")+" "+form.Get("LogicalResourceId"))
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	if form.Get("Action") != "DescribeStackResource" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, recordedError, "unexpected action "+form.Get("Action"))
		return
	}
	if form.Get("StackName") != c.stack {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, recordedError, "Stack with id "+form.Get("StackName")+" does not exist")
		return
	}
	id := form.Get("LogicalResourceId")
	res, ok := c.resources[id]
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, recordedError, "Resource "+id+" does not exist for stack "+c.stack)
		return
	}
	fmt.Fprintf(w, recordedResource, id, res[0], res[1])
}

func cfnClient(url string) *cloudformation.Client {
	return cloudformation.New(cloudformation.Options{Region: "eu-west-1", BaseEndpoint: aws.String(url),
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
}

// The cluster and the start functions are found by logical id; a resource the stack
// does not have is left out, a stack that does not exist is ErrNoStack.
func TestResolve(t *testing.T) {
	cfn := &cloudFormation{stack: "sandgate", resources: map[string][2]string{
		"Cluster":         {"sandgate-Cluster-0a1b2c3d4e5f", "AWS::ECS::Cluster"},
		"ConnectFunction": {"sandgate-connect", "AWS::Lambda::Function"},
		"PrewarmFunction": {"sandgate-PrewarmFunction-9z8y7x6w5v4u", "AWS::Lambda::Function"},
		"PoolFunction":    {"sandgate-pool", "AWS::Lambda::Function"},
	}}
	srv := httptest.NewServer(cfn)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	got, err := undeploy.Resolve(ctx, cfnClient(srv.URL), "sandgate")
	if err != nil {
		t.Fatal(err)
	}
	want := undeploy.Target{Stack: "sandgate", Cluster: "sandgate-Cluster-0a1b2c3d4e5f",
		StartFunctions: map[string]string{"ConnectFunction": "sandgate-connect", "PrewarmFunction": "sandgate-PrewarmFunction-9z8y7x6w5v4u",
			"PoolFunction": "sandgate-pool"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resolved %+v, want %+v", got, want)
	}
	if strings.Join(cfn.calls, ",") != "DescribeStackResource Cluster,DescribeStackResource ConnectFunction,DescribeStackResource PrewarmFunction,DescribeStackResource PoolFunction" {
		t.Fatalf("calls %q", cfn.calls)
	}

	delete(cfn.resources, "PrewarmFunction")
	if got, err = undeploy.Resolve(ctx, cfnClient(srv.URL), "sandgate"); err != nil || len(got.StartFunctions) != 2 || got.Cluster == "" {
		t.Fatalf("without PrewarmFunction: %+v, %v", got, err)
	}
	if _, err := undeploy.Resolve(ctx, cfnClient(srv.URL), "other"); !errors.Is(err, undeploy.ErrNoStack) ||
		!strings.Contains(err.Error(), "Stack with id other does not exist") {
		t.Fatalf("a stack that does not exist: %v", err)
	}
}

// HoldStarts throttles every start function (reserved concurrency 0) and remembers
// what each had; Release gives it back: the value where there was one, none where
// there was none.
func TestHold_ThrottlesThenRestores(t *testing.T) {
	rt := lambdart.New(slog.New(slog.DiscardHandler), io.Discard)
	for _, name := range []string{"sandgate-connect", "sandgate-prewarm"} {
		if err := rt.Add(lambdart.Function{Name: name, Path: "/bin/true"}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { rt.Close() })
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(srv.Close)
	api := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	five := 5
	if err := rt.SetReservedConcurrency("sandgate-prewarm", &five); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	u := &undeploy.Undeployer{Lambda: api, Out: &out, Target: undeploy.Target{Stack: "sandgate",
		StartFunctions: map[string]string{"ConnectFunction": "sandgate-connect", "PrewarmFunction": "sandgate-prewarm"}}}
	ctx := context.Background()
	hold, err := u.HoldStarts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sandgate-connect", "sandgate-prewarm"} {
		if n, _ := rt.ReservedConcurrency(name); n == nil || *n != 0 {
			t.Fatalf("%s held at %v, want 0", name, n)
		}
		if _, err := rt.Invoke(ctx, name, []byte(`{}`)); !errors.Is(err, lambdart.ErrThrottled) {
			t.Fatalf("%s invoked while held: %v", name, err)
		}
	}
	if got := strings.Join(hold.Functions(), ","); got != "sandgate-connect,sandgate-prewarm" {
		t.Fatalf("held %s", got)
	}
	if err := hold.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rt.ReservedConcurrency("sandgate-connect"); n != nil {
		t.Fatalf("sandgate-connect after release: %d, want none", *n)
	}
	if n, _ := rt.ReservedConcurrency("sandgate-prewarm"); n == nil || *n != 5 {
		t.Fatalf("sandgate-prewarm after release: %v, want 5", n)
	}
	for _, line := range []string{"ConnectFunction (sandgate-connect): reserved concurrency 0", "sandgate-prewarm takes invocations again"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("no %q in the progress:\n%s", line, out.String())
		}
	}

	// A function that cannot be throttled leaves none throttled.
	u.Target.StartFunctions["ZFunction"] = "sandgate-gone"
	if _, err := u.HoldStarts(ctx); err == nil || !strings.Contains(err.Error(), "sandgate-gone") {
		t.Fatalf("hold with a missing function: %v", err)
	}
	for _, name := range []string{"sandgate-connect", "sandgate-prewarm"} {
		if n, _ := rt.ReservedConcurrency(name); n != nil && *n == 0 {
			t.Fatalf("%s left throttled after a failed hold", name)
		}
	}
}

// The printed deletion is the exact command, quoted for a shell.
func TestDeleteCommand(t *testing.T) {
	for _, c := range []struct {
		stack, region, profile string
		noPrompts              bool
		want                   string
	}{
		{"sandgate", "eu-west-1", "", false, "sam delete --stack-name sandgate --region eu-west-1"},
		{"sandgate", "eu-west-1", "prod admin", true, "sam delete --stack-name sandgate --region eu-west-1 --profile 'prod admin' --no-prompts"},
		{"it's", "", "", false, `sam delete --stack-name 'it'\''s'`},
	} {
		if got := undeploy.ShellQuote(undeploy.DeleteCommand(c.stack, c.region, c.profile, c.noPrompts)); got != c.want {
			t.Errorf("%+v: %s", c, got)
		}
	}
}
