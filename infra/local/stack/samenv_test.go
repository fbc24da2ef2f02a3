package stack_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/stack"
)

// The stack's one AWS endpoint — what AWS_ENDPOINT_URL points at for sam local invoke —
// reaches every emulated service with the caller's own signature, which each service
// still checks; a request that names no service is refused with a reason.
func TestStack_AWSEndpoint_RoutesBySignedService(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if s.AWSEndpoint == "" {
		t.Fatal("no AWS endpoint")
	}
	// The operator's configuration carries the DynamoDB endpoint as a configuration
	// source, which outranks cfg.BaseEndpoint: set each client's own.
	cfg := s.AWS.Copy()
	ep := aws.String(s.AWSEndpoint)

	if _, err := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = ep }).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.Table)}); err != nil {
		t.Errorf("dynamodb through the endpoint: %v", err)
	}
	if _, err := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle, o.BaseEndpoint = true, ep }).ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Errorf("s3 through the endpoint: %v", err)
	}
	who, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = ep }).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || !strings.HasSuffix(aws.ToString(who.Arn), ":user/"+stack.OperatorName) {
		t.Errorf("sts through the endpoint: %v %v", who, err)
	}
	if _, err := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) { o.BaseEndpoint = ep }).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(stack.SigningSecretName)}); err != nil {
		t.Errorf("secrets manager through the endpoint: %v", err)
	}

	// The service behind still checks the signature: a wrong secret is refused by it.
	bad := cfg.Copy()
	bad.Credentials = credentials.NewStaticCredentialsProvider(s.Operator().AccessKeyID, "wrongwrongwrongwrongwrongwrongwrongwrong", "")
	_, err = dynamodb.NewFromConfig(bad, func(o *dynamodb.Options) { o.BaseEndpoint = ep }).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.Table)})
	var ae smithy.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.ErrorCode(), "Signature") {
		t.Errorf("a wrong secret through the endpoint: %v", err)
	}

	// Unsigned, or signed for a service the stack does not run: refused, saying why.
	for name, auth := range map[string]string{
		"unsigned":        "",
		"unknown service": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00",
	} {
		req, _ := http.NewRequestWithContext(ctx, "POST", s.AWSEndpoint+"/", strings.NewReader("{}"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "service") {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
}
