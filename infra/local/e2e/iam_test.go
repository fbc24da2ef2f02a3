package e2e_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// as returns an AWS configuration signed by a fresh session of the template's role
// logicalID, as Lambda or ECS would hand it to the function or task that runs as it.
func as(t *testing.T, s *testkit.Stack, logicalID string) aws.Config {
	t.Helper()
	c, _, err := s.Authority().Issue(identity.SessionSpec{RoleARN: s.Authority().RoleARN(stack.RoleName(logicalID)), SessionName: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.AWS.Copy()
	cfg.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	cfg.RetryMaxAttempts = 1
	return cfg
}

// Each role can do what its function or task needs and no more: the denials that the
// isolation between the parts rests on, tried with real sessions of the roles.
func TestIAM_CrossRole_Denials(t *testing.T) {
	s := apps.Get(t)
	ctx := context.Background()
	denied := func(t *testing.T, what string, err error, code string) {
		t.Helper()
		if got := testkit.ErrorCode(err); got != code {
			t.Errorf("%s: err = %v, want %s", what, err, code)
		}
	}
	item := map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "USER#user_probe"}, "sk": &types.AttributeValueMemberS{Value: "SANDBOX"}}
	ddb := func(role string) *dynamodb.Client {
		return dynamodb.NewFromConfig(as(t, s, role), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"]) })
	}
	bucket := func(role string) *s3.Client {
		return s3.NewFromConfig(as(t, s, role), func(o *s3.Options) {
			o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
			o.UsePathStyle = true
		})
	}

	// The Status function reads: it cannot write the table.
	_, err := ddb("StatusRole").PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(s.Table), Item: item})
	denied(t, "Status PutItem", err, "AccessDeniedException")
	_, err = ddb("StatusRole").UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(s.Table), Key: item,
		UpdateExpression: aws.String("SET #s = :s"), ExpressionAttributeNames: map[string]string{"#s": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": &types.AttributeValueMemberS{Value: "RUNNING"}}})
	denied(t, "Status UpdateItem", err, "AccessDeniedException")
	if _, err := ddb("StatusRole").GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table), Key: item}); err != nil {
		t.Errorf("Status GetItem: %v (its one right)", err)
	}

	// A task may invoke no function.
	for _, fn := range []string{"ConnectFunction", "CleanupFunction", "MessageFunction"} {
		cl := lambda.NewFromConfig(as(t, s, "TaskRole"), func(o *lambda.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_LAMBDA"]) })
		_, err := cl.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(s.Name(fn)), Payload: []byte(`{}`)})
		denied(t, "task invokes "+fn, err, "AccessDeniedException")
	}

	// Deleting a user's objects is Cleanup's (and, within the bucket's users/, the
	// sandbox's own sync's): no function but Cleanup may.
	key := "users/user_probe/files/x"
	if _, err := bucket("CleanupRole").PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: strings.NewReader("x")}); testkit.ErrorCode(err) != "AccessDenied" {
		t.Errorf("Cleanup PutObject: err = %v, want AccessDenied (it only deletes)", err)
	}
	if _, err := s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	}).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"AuthorizeRole", "ConnectRole", "MessageRole", "DisconnectRole", "StatusRole", "PrewarmRole"} {
		_, err := bucket(role).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
		denied(t, role+" DeleteObject", err, "AccessDenied")
	}
	if _, err := bucket("CleanupRole").DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)}); err != nil {
		t.Errorf("Cleanup DeleteObject: %v (its job)", err)
	}
}
