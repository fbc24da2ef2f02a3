package stackref_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"

	"github.com/sandgate/sandgate/infra/stackref"
)

// describeStacks answers as the CloudFormation API reference's DescribeStacks example
// does (Query protocol, XML), for one stack; any other name gets the ValidationError
// CloudFormation gives for a stack that does not exist.
func describeStacks(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	if r.Form.Get("Action") != "DescribeStacks" {
		http.Error(w, "unexpected "+r.Form.Get("Action"), http.StatusBadRequest)
		return
	}
	name := r.Form.Get("StackName")
	w.Header().Set("Content-Type", "text/xml")
	if name != "sandgate" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>Stack with id ` + name + ` does not exist</Message></Error><RequestId>b9b4b068-3a41-11e5-94eb-example</RequestId></ErrorResponse>`))
		return
	}
	_, _ = w.Write([]byte(`<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeStacksResult>
    <Stacks>
      <member>
        <StackName>sandgate</StackName>
        <StackId>arn:aws:cloudformation:eu-west-1:123456789012:stack/sandgate/aaf549a0-a413-11df-adb3-5081b3858e83</StackId>
        <StackStatus>UPDATE_COMPLETE</StackStatus>
        <CreationTime>2026-11-30T10:00:00Z</CreationTime>
        <Parameters>
          <member><ParameterKey>BucketName</ParameterKey><ParameterValue>acme-sandgate-users</ParameterValue></member>
          <member><ParameterKey>StorageRegion</ParameterKey><ParameterValue></ParameterValue></member>
          <member><ParameterKey>StoragePathStyle</ParameterKey><ParameterValue>false</ParameterValue></member>
          <member><ParameterKey>StorageCredentialsSecretArn</ParameterKey><ParameterValue></ParameterValue></member>
        </Parameters>
        <Outputs>
          <member><OutputKey>TableName</OutputKey><OutputValue>sandgate-Table-1X2Y3Z4W5V6U</OutputValue></member>
          <member><OutputKey>ClusterName</OutputKey><OutputValue>sandgate-Cluster-0a1b2c3d4e5f</OutputValue></member>
          <member><OutputKey>ManagementEndpoint</OutputKey><OutputValue>https://abc123.execute-api.eu-west-1.amazonaws.com/prod</OutputValue></member>
        </Outputs>
      </member>
    </Stacks>
  </DescribeStacksResult>
  <ResponseMetadata><RequestId>b9b4b068-3a41-11e5-94eb-example</RequestId></ResponseMetadata>
</DescribeStacksResponse>`))
}

func TestDescribe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(describeStacks))
	t.Cleanup(srv.Close)
	api := cloudformation.New(cloudformation.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""), Retryer: aws.NopRetryer{}})
	d, err := stackref.Describe(context.Background(), api, "sandgate")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != "UPDATE_COMPLETE" || d.Outputs["TableName"] != "sandgate-Table-1X2Y3Z4W5V6U" ||
		d.Outputs["ManagementEndpoint"] != "https://abc123.execute-api.eu-west-1.amazonaws.com/prod" ||
		d.Parameters["BucketName"] != "acme-sandgate-users" || d.Parameters["StorageCredentialsSecretArn"] != "" {
		t.Fatalf("described %+v", d)
	}
	_, err = stackref.Describe(context.Background(), api, "other")
	if !errors.Is(err, stackref.ErrNoStack) || !strings.Contains(err.Error(), "Stack with id other does not exist") {
		t.Fatalf("a stack that does not exist: %v", err)
	}
}
