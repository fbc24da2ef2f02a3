package iampolicy_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

const (
	table    = "sandgate-table"
	tableARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/sandgate-table"
	bucket   = "sandgate-data"
)

var schema iampolicy.DynamoDBSchema = func(name string) (iampolicy.DynamoDBTable, bool) {
	switch name {
	case table:
		return iampolicy.DynamoDBTable{HashKey: "pk", IndexHashKeys: map[string]string{"byTask": "task"}}, true
	case "other":
		return iampolicy.DynamoDBTable{HashKey: "id"}, true
	}
	return iampolicy.DynamoDBTable{}, false
}

func s(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }

func key(pk, sk string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"pk": s(pk), "sk": s(sk)}
}

// ddbCall makes one DynamoDB call with the real SDK client and derives its request.
func ddbCall(t *testing.T, call func(ctx context.Context, c *dynamodb.Client) error) []identity.Request {
	t.Helper()
	cap := newCapture(t)
	_ = call(context.Background(), dynamodb.NewFromConfig(cap.config()))
	reqs, err := iampolicy.DynamoDB(env, cap.next(t), schema)
	if err != nil {
		t.Fatalf("derive: %v", err)
	}
	return reqs
}

func TestDynamoDB_ItemCalls(t *testing.T) {
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX"),
			ProjectionExpression: aws.String("#s, lease.token"), ExpressionAttributeNames: map[string]string{"#s": "state"}})
		return err
	}), "dynamodb:GetItem "+tableARN+" dynamodb:Attributes=state|lease dynamodb:LeadingKeys=USER#u1")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), ReturnValues: ddbtypes.ReturnValueAllOld,
			Item: map[string]ddbtypes.AttributeValue{"pk": s("USER#u1"), "sk": s("CONN#c1"), "expiresAt": &ddbtypes.AttributeValueMemberN{Value: "5"}}})
		return err
	}), "dynamodb:PutItem "+tableARN+" dynamodb:Attributes=expiresAt|pk|sk dynamodb:LeadingKeys=USER#u1 dynamodb:ReturnValues=ALL_OLD")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX"),
			UpdateExpression:          aws.String("SET #st = :s, generation = generation + :one REMOVE lease ADD queued :n"),
			ExpressionAttributeNames:  map[string]string{"#st": "state"},
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":s": s("RUNNING"), ":one": &ddbtypes.AttributeValueMemberN{Value: "1"}, ":n": &ddbtypes.AttributeValueMemberN{Value: "1"}},
			ReturnValues:              ddbtypes.ReturnValueUpdatedNew, ReturnConsumedCapacity: ddbtypes.ReturnConsumedCapacityTotal})
		return err
	}), "dynamodb:UpdateItem "+tableARN+" dynamodb:Attributes=pk|sk|state|generation|lease|queued dynamodb:LeadingKeys=USER#u1 dynamodb:ReturnConsumedCapacity=TOTAL dynamodb:ReturnValues=UPDATED_NEW")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("USER#u1", "CONN#c1")})
		return err
	}), "dynamodb:DeleteItem "+tableARN+" dynamodb:LeadingKeys=USER#u1")
}

func TestDynamoDB_QueryAndScan(t *testing.T) {
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table),
			KeyConditionExpression:    aws.String("#pk = :pk AND begins_with(sk, :p)"),
			ExpressionAttributeNames:  map[string]string{"#pk": "pk"},
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": s("USER#u1"), ":p": s("INBOX#")}})
		return err
	}), "dynamodb:Query "+tableARN+" dynamodb:LeadingKeys=USER#u1")

	// BETWEEN carries an AND of its own; the value may come first.
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), Select: ddbtypes.SelectCount,
			KeyConditionExpression:    aws.String("(sk BETWEEN :a AND :b) AND :pk = pk"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": s("USER#u2"), ":a": s("A"), ":b": s("B")}})
		return err
	}), "dynamodb:Query "+tableARN+" dynamodb:LeadingKeys=USER#u2 dynamodb:Select=COUNT")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), IndexName: aws.String("byTask"),
			KeyConditionExpression:    aws.String("task = :t"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":t": s("t-1")}})
		return err
	}), "dynamodb:Query "+tableARN+"/index/byTask dynamodb:LeadingKeys=t-1")

	// Scan names no key, so it carries no dynamodb:LeadingKeys (as on AWS).
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table), ProjectionExpression: aws.String("pk, #s"),
			ExpressionAttributeNames: map[string]string{"#s": "state"}})
		return err
	}), "dynamodb:Scan "+tableARN+" dynamodb:Attributes=pk|state")
}

func TestDynamoDB_BatchesAndTransactions(t *testing.T) {
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]ddbtypes.KeysAndAttributes{
			table:   {Keys: []map[string]ddbtypes.AttributeValue{key("USER#u1", "SANDBOX"), key("USER#u2", "SANDBOX"), key("USER#u1", "INBOXMETA")}},
			"other": {Keys: []map[string]ddbtypes.AttributeValue{{"id": s("x")}}},
		}})
		return err
	}),
		"dynamodb:BatchGetItem arn:aws:dynamodb:eu-west-1:123456789012:table/other dynamodb:LeadingKeys=x",
		"dynamodb:BatchGetItem "+tableARN+" dynamodb:LeadingKeys=USER#u1|USER#u2")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{
			table: {{PutRequest: &ddbtypes.PutRequest{Item: key("USER#u1", "INBOX#1")}}, {DeleteRequest: &ddbtypes.DeleteRequest{Key: key("USER#u3", "INBOX#2")}}},
		}})
		return err
	}), "dynamodb:BatchWriteItem "+tableARN+" dynamodb:LeadingKeys=USER#u1|USER#u3")

	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.TransactGetItems(ctx, &dynamodb.TransactGetItemsInput{TransactItems: []ddbtypes.TransactGetItem{
			{Get: &ddbtypes.Get{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX")}},
			{Get: &ddbtypes.Get{TableName: aws.String(table), Key: key("USER#u2", "SANDBOX")}},
		}})
		return err
	}),
		"dynamodb:GetItem "+tableARN+" dynamodb:EnclosingOperation=TransactGetItems dynamodb:LeadingKeys=USER#u1",
		"dynamodb:GetItem "+tableARN+" dynamodb:EnclosingOperation=TransactGetItems dynamodb:LeadingKeys=USER#u2")

	// Each item of a transaction is its own Put, Update, Delete or ConditionCheckItem.
	checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
			{Put: &ddbtypes.Put{TableName: aws.String(table), Item: key("USER#u1", "INBOX#7")}},
			{Update: &ddbtypes.Update{TableName: aws.String(table), Key: key("USER#u1", "INBOXMETA"), UpdateExpression: aws.String("SET seq = :n"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": &ddbtypes.AttributeValueMemberN{Value: "8"}}}},
			{Delete: &ddbtypes.Delete{TableName: aws.String(table), Key: key("USER#u1", "INBOX#1")}},
			{ConditionCheck: &ddbtypes.ConditionCheck{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX"),
				ConditionExpression: aws.String("attribute_exists(pk)")}},
		}})
		return err
	}),
		"dynamodb:PutItem "+tableARN+" dynamodb:Attributes=pk|sk dynamodb:EnclosingOperation=TransactWriteItems dynamodb:LeadingKeys=USER#u1",
		"dynamodb:UpdateItem "+tableARN+" dynamodb:Attributes=pk|sk|seq dynamodb:EnclosingOperation=TransactWriteItems dynamodb:LeadingKeys=USER#u1",
		"dynamodb:DeleteItem "+tableARN+" dynamodb:EnclosingOperation=TransactWriteItems dynamodb:LeadingKeys=USER#u1",
		"dynamodb:ConditionCheckItem "+tableARN+" dynamodb:LeadingKeys=USER#u1")
}

func TestDynamoDB_PartiQL(t *testing.T) {
	for stmt, want := range map[string]string{
		`SELECT * FROM "sandgate-table" WHERE pk = 'USER#u1'`:         "dynamodb:PartiQLSelect " + tableARN,
		`select pk from "sandgate-table"."byTask" where task = 'x'`:   "dynamodb:PartiQLSelect " + tableARN + "/index/byTask",
		`INSERT INTO "sandgate-table" VALUE {'pk': 'a', 'sk': 'b'}`:   "dynamodb:PartiQLInsert " + tableARN,
		`UPDATE "sandgate-table" SET x = 1 WHERE pk = 'a' AND sk='b'`: "dynamodb:PartiQLUpdate " + tableARN,
		`DELETE FROM "sandgate-table" WHERE pk = 'a' AND sk = 'b'`:    "dynamodb:PartiQLDelete " + tableARN,
	} {
		checkDerived(t, ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
			_, err := c.ExecuteStatement(ctx, &dynamodb.ExecuteStatementInput{Statement: aws.String(stmt)})
			return err
		}), want)
	}
}

func TestDynamoDB_Refusals(t *testing.T) {
	cap := newCapture(t)
	c := dynamodb.NewFromConfig(cap.config())
	_, _ = c.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String("nope"), Key: key("a", "b")})
	if _, err := iampolicy.DynamoDB(env, cap.next(t), schema); !errors.Is(err, iampolicy.ErrMalformed) {
		t.Errorf("unknown table: %v, want ErrMalformed", err)
	}
	_, _ = c.Query(context.Background(), &dynamodb.QueryInput{TableName: aws.String(table),
		KeyConditionExpression: aws.String("sk = :s"), ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":s": s("x")}})
	if _, err := iampolicy.DynamoDB(env, cap.next(t), schema); !errors.Is(err, iampolicy.ErrMalformed) {
		t.Errorf("query without partition key: %v, want ErrMalformed", err)
	}
	_, _ = c.RestoreTableFromBackup(context.Background(), &dynamodb.RestoreTableFromBackupInput{BackupArn: aws.String("arn:x"), TargetTableName: aws.String("t")})
	if _, err := iampolicy.DynamoDB(env, cap.next(t), schema); !errors.Is(err, identity.ErrUnsupported) {
		t.Errorf("unknown operation: %v, want ErrUnsupported", err)
	}
}

// s3Call makes one S3 call (path-style) and derives its request.
func s3Call(t *testing.T, call func(ctx context.Context, c *s3.Client) error) []identity.Request {
	t.Helper()
	cap := newCapture(t)
	_ = call(context.Background(), s3.NewFromConfig(cap.config(), func(o *s3.Options) { o.UsePathStyle = true }))
	reqs, err := iampolicy.S3(env, cap.next(t))
	if err != nil {
		t.Fatalf("derive: %v", err)
	}
	return reqs
}

func TestS3_Objects(t *testing.T) {
	obj := "arn:aws:s3:::" + bucket + "/users/u1/.last-sync"
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/.last-sync")})
		return err
	}), "s3:GetObject "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/.last-sync")})
		return err
	}), "s3:GetObject "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/.last-sync"), VersionId: aws.String("v1")})
		return err
	}), "s3:GetObjectVersion "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/files/a b+c.txt"),
			Body: strings.NewReader("x"), IfNoneMatch: aws.String("*")})
		return err
	}), "s3:PutObject arn:aws:s3:::"+bucket+"/users/u1/files/a b+c.txt s3:if-none-match=*")
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/files/new"),
			CopySource: aws.String(bucket + "/users/u1/files/old%20one"), MetadataDirective: s3types.MetadataDirectiveReplace})
		return err
	}),
		"s3:PutObject arn:aws:s3:::"+bucket+"/users/u1/files/new s3:x-amz-copy-source="+bucket+"/users/u1/files/old%20one s3:x-amz-metadata-directive=REPLACE",
		"s3:GetObject arn:aws:s3:::"+bucket+"/users/u1/files/old one")
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/files/a")})
		return err
	}), "s3:DeleteObject arn:aws:s3:::"+bucket+"/users/u1/files/a")
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &s3types.Delete{Objects: []s3types.ObjectIdentifier{
			{Key: aws.String("users/u1/files/a")}, {Key: aws.String("users/u2/files/b")}, {Key: aws.String("users/u1/x"), VersionId: aws.String("v")}}}})
		return err
	}),
		"s3:DeleteObject arn:aws:s3:::"+bucket+"/users/u1/files/a",
		"s3:DeleteObject arn:aws:s3:::"+bucket+"/users/u2/files/b",
		"s3:DeleteObjectVersion arn:aws:s3:::"+bucket+"/users/u1/x")
}

func TestS3_Multipart(t *testing.T) {
	obj := "arn:aws:s3:::" + bucket + "/users/u1/files/big"
	in := func() (*string, *string) { return aws.String(bucket), aws.String("users/u1/files/big") }
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		b, k := in()
		_, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: k})
		return err
	}), "s3:PutObject "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		b, k := in()
		_, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: b, Key: k, UploadId: aws.String("u"), PartNumber: aws.Int32(1), Body: strings.NewReader("x")})
		return err
	}), "s3:PutObject "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		b, k := in()
		_, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: b, Key: k, UploadId: aws.String("u")})
		return err
	}), "s3:PutObject "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		b, k := in()
		_, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: b, Key: k, UploadId: aws.String("u")})
		return err
	}), "s3:AbortMultipartUpload "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		b, k := in()
		_, err := c.ListParts(ctx, &s3.ListPartsInput{Bucket: b, Key: k, UploadId: aws.String("u")})
		return err
	}), "s3:ListMultipartUploadParts "+obj)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		return err
	}), "s3:ListBucketMultipartUploads arn:aws:s3:::"+bucket)
}

func TestS3_Buckets(t *testing.T) {
	b := "arn:aws:s3:::" + bucket
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("users/u1/"),
			Delimiter: aws.String("/"), MaxKeys: aws.Int32(100)})
		return err
	}), "s3:ListBucket "+b+" s3:delimiter=/ s3:max-keys=100 s3:prefix=users/u1/")
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		return err
	}), "s3:ListBucket "+b)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String(bucket), Prefix: aws.String("users/")})
		return err
	}), "s3:ListBucket "+b+" s3:prefix=users/")
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
		return err
	}), "s3:ListBucket "+b)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(bucket)})
		return err
	}), "s3:GetBucketLocation "+b)
	checkDerived(t, s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		return err
	}), "s3:ListAllMyBuckets *")

	// A GetObject of a missing key asks a second question.
	cap := newCapture(t)
	_, _ = s3.NewFromConfig(cap.config(), func(o *s3.Options) { o.UsePathStyle = true }).GetObject(context.Background(),
		&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("users/u1/.last-sync")})
	checkDerived(t, []identity.Request{iampolicy.S3MissingKey(env, cap.next(t), bucket, "users/u1/.last-sync")},
		"s3:ListBucket "+b+" s3:prefix=users/u1/.last-sync")
}

func TestS3_GlobalKeys(t *testing.T) {
	reqs := s3Call(t, func(ctx context.Context, c *s3.Client) error {
		_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k")})
		return err
	})
	c := reqs[0].Context
	for k, want := range map[string]string{"aws:RequestedRegion": region, "aws:SecureTransport": "false",
		"s3:authType": "REST-HEADER", "s3:signatureversion": "AWS4-HMAC-SHA256", "s3:ResourceAccount": account} {
		if got := strings.Join(c[k], "|"); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(c["s3:x-amz-content-sha256"]) != 1 {
		t.Errorf("s3:x-amz-content-sha256 = %v", c["s3:x-amz-content-sha256"])
	}
	// Over TLS the same request is secure transport.
	call := iampolicy.Call{Method: http.MethodGet, URL: &url.URL{Path: "/" + bucket + "/k"}, Header: http.Header{}, TLS: true}
	reqs, err := iampolicy.S3(env, call)
	if err != nil || reqs[0].Context["aws:SecureTransport"][0] != "true" {
		t.Errorf("over TLS: %v %v", reqs, err)
	}
}

const (
	clusterARN = "arn:aws:ecs:eu-west-1:123456789012:cluster/sandgate"
	taskDefARN = "arn:aws:ecs:eu-west-1:123456789012:task-definition/sandgate-sandbox:5"
	taskRole   = "arn:aws:iam::123456789012:role/sandgate-TaskRole"
	execRole   = "arn:aws:iam::123456789012:role/sandgate-TaskExecutionRole"
)

func resolveTaskDef(td string) (iampolicy.ECSTaskDefinition, error) {
	if td != "sandgate-sandbox" && td != taskDefARN {
		return iampolicy.ECSTaskDefinition{}, errors.New("no such task definition")
	}
	return iampolicy.ECSTaskDefinition{ARN: taskDefARN, TaskRoleARN: taskRole, ExecutionRoleARN: execRole}, nil
}

func ecsCall(t *testing.T, call func(ctx context.Context, c *ecs.Client) error) []identity.Request {
	t.Helper()
	cap := newCapture(t)
	_ = call(context.Background(), ecs.NewFromConfig(cap.config()))
	reqs, err := iampolicy.ECS(env, cap.next(t), resolveTaskDef)
	if err != nil {
		t.Fatalf("derive: %v", err)
	}
	return reqs
}

func TestECS_RunTask(t *testing.T) {
	checkDerived(t, ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
		_, err := c.RunTask(ctx, &ecs.RunTaskInput{Cluster: aws.String(clusterARN), TaskDefinition: aws.String("sandgate-sandbox"),
			Tags: []ecstypes.Tag{{Key: aws.String("user"), Value: aws.String("u1")}, {Key: aws.String("generation"), Value: aws.String("3")}}})
		return err
	}),
		"ecs:RunTask "+taskDefARN+" ecs:cluster="+clusterARN,
		"ecs:TagResource arn:aws:ecs:eu-west-1:123456789012:task/sandgate/* aws:RequestTag/generation=3 aws:RequestTag/user=u1 aws:TagKeys=generation|user ecs:CreateAction=RunTask",
		"iam:PassRole "+taskRole+" iam:PassedToService=ecs-tasks.amazonaws.com",
		"iam:PassRole "+execRole+" iam:PassedToService=ecs-tasks.amazonaws.com")

	// Roles passed in overrides replace the definition's; no tags, no TagResource.
	other := "arn:aws:iam::123456789012:role/Other"
	checkDerived(t, ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
		_, err := c.RunTask(ctx, &ecs.RunTaskInput{Cluster: aws.String("sandgate"), TaskDefinition: aws.String(taskDefARN),
			Overrides: &ecstypes.TaskOverride{TaskRoleArn: aws.String(other)}})
		return err
	}),
		"ecs:RunTask "+taskDefARN+" ecs:cluster="+clusterARN,
		"iam:PassRole "+other+" iam:PassedToService=ecs-tasks.amazonaws.com",
		"iam:PassRole "+execRole+" iam:PassedToService=ecs-tasks.amazonaws.com")
}

func TestECS_Tasks(t *testing.T) {
	task := "arn:aws:ecs:eu-west-1:123456789012:task/sandgate/"
	checkDerived(t, ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
		_, err := c.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(clusterARN), Tasks: []string{task + "abc", "def"}})
		return err
	}),
		"ecs:DescribeTasks "+task+"abc ecs:cluster="+clusterARN,
		"ecs:DescribeTasks "+task+"def ecs:cluster="+clusterARN)
	checkDerived(t, ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
		_, err := c.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(clusterARN), Task: aws.String("abc"), Reason: aws.String("idle")})
		return err
	}), "ecs:StopTask "+task+"abc ecs:cluster="+clusterARN)
	checkDerived(t, ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
		_, err := c.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandgate"), StartedBy: aws.String("sandgate")})
		return err
	}), "ecs:ListTasks * ecs:cluster="+clusterARN)
}

func TestManagementAPI(t *testing.T) {
	cap := newCapture(t)
	cfg := cap.config()
	cfg.BaseEndpoint = aws.String(cap.srv.URL + "/prod")
	c := apigatewaymanagementapi.NewFromConfig(cfg)
	conn := "arn:aws:execute-api:eu-west-1:123456789012:api123/prod/"
	for method, call := range map[string]func() error{
		"POST": func() error {
			_, err := c.PostToConnection(context.Background(), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String("Abc/12+3="), Data: []byte("hi")})
			return err
		},
		"GET": func() error {
			_, err := c.GetConnection(context.Background(), &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String("Abc/12+3=")})
			return err
		},
		"DELETE": func() error {
			_, err := c.DeleteConnection(context.Background(), &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String("Abc/12+3=")})
			return err
		},
	} {
		_ = call()
		reqs, err := iampolicy.ManagementAPI(env, "api123", "prod", cap.next(t))
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		checkDerived(t, reqs, "execute-api:ManageConnections "+conn+method+"/@connections/Abc/12+3=")
	}
}

func TestLambda(t *testing.T) {
	cap := newCapture(t)
	c := lambda.NewFromConfig(cap.config())
	_, _ = c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("sandgate-connect"), Qualifier: aws.String("live"),
		InvocationType: lambdatypes.InvocationTypeEvent, Payload: []byte("{}")})
	reqs, err := iampolicy.Lambda(env, cap.next(t))
	if err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs, "lambda:InvokeFunction arn:aws:lambda:eu-west-1:123456789012:function:sandgate-connect:live")

	_, _ = c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("arn:aws:lambda:eu-west-1:123456789012:function:sandgate-cleanup")})
	if reqs, err = iampolicy.Lambda(env, cap.next(t)); err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs, "lambda:InvokeFunction arn:aws:lambda:eu-west-1:123456789012:function:sandgate-cleanup")

	// Reserved concurrency: the action of the operation's name, on the function itself.
	zero := int32(0)
	_, _ = c.PutFunctionConcurrency(context.Background(), &lambda.PutFunctionConcurrencyInput{
		FunctionName: aws.String("sandgate-connect"), ReservedConcurrentExecutions: &zero})
	if reqs, err = iampolicy.Lambda(env, cap.next(t)); err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs, "lambda:PutFunctionConcurrency arn:aws:lambda:eu-west-1:123456789012:function:sandgate-connect")
	_, _ = c.GetFunctionConcurrency(context.Background(), &lambda.GetFunctionConcurrencyInput{
		FunctionName: aws.String("arn:aws:lambda:eu-west-1:123456789012:function:sandgate-prewarm")})
	if reqs, err = iampolicy.Lambda(env, cap.next(t)); err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs, "lambda:GetFunctionConcurrency arn:aws:lambda:eu-west-1:123456789012:function:sandgate-prewarm")
	_, _ = c.DeleteFunctionConcurrency(context.Background(), &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("sandgate-connect")})
	if reqs, err = iampolicy.Lambda(env, cap.next(t)); err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs, "lambda:DeleteFunctionConcurrency arn:aws:lambda:eu-west-1:123456789012:function:sandgate-connect")

	checkDerived(t, iampolicy.LambdaFunctionURL(env, true, "sandgate-status", "", "AWS_IAM"),
		"lambda:InvokeFunctionUrl arn:aws:lambda:eu-west-1:123456789012:function:sandgate-status lambda:FunctionUrlAuthType=AWS_IAM",
		"lambda:InvokeFunction arn:aws:lambda:eu-west-1:123456789012:function:sandgate-status lambda:InvokedViaFunctionUrl=true")
}

func TestSTS(t *testing.T) {
	cap := newCapture(t)
	c := sts.NewFromConfig(cap.config())
	role := "arn:aws:iam::123456789012:role/sandgate-TaskRole"
	_, _ = c.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(role), RoleSessionName: aws.String("task-1"),
		Tags:              []ststypes.Tag{{Key: aws.String("userId"), Value: aws.String("u1")}},
		TransitiveTagKeys: []string{"userId"}, SourceIdentity: aws.String("u1")})
	reqs, err := iampolicy.STS(env, cap.next(t))
	if err != nil {
		t.Fatal(err)
	}
	checkDerived(t, reqs,
		"sts:AssumeRole "+role+" aws:RequestTag/userId=u1 aws:TagKeys=userId sts:RoleSessionName=task-1 sts:SourceIdentity=u1 sts:TransitiveTagKeys=userId",
		"sts:TagSession "+role+" aws:RequestTag/userId=u1 aws:TagKeys=userId sts:TransitiveTagKeys=userId",
		"sts:SetSourceIdentity "+role+" sts:SourceIdentity=u1")

	_, _ = c.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if reqs, err = iampolicy.STS(env, cap.next(t)); err != nil || len(reqs) != 0 {
		t.Errorf("GetCallerIdentity: %v %v, want no question", reqs, err)
	}
}

func TestSecretsManager(t *testing.T) {
	secretARN := "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sandgate/signing-secrets-AbCdEf"
	resolve := func(id string) (string, bool) {
		if id == "sandgate/signing-secrets" || id == secretARN {
			return secretARN, true
		}
		return "", false
	}
	cap := newCapture(t)
	c := secretsmanager.NewFromConfig(cap.config())
	derive := func() []identity.Request {
		t.Helper()
		reqs, err := iampolicy.SecretsManager(env, cap.next(t), resolve)
		if err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	_, _ = c.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("sandgate/signing-secrets"), VersionStage: aws.String("AWSPREVIOUS")})
	checkDerived(t, derive(), "secretsmanager:GetSecretValue "+secretARN+" secretsmanager:SecretId=sandgate/signing-secrets secretsmanager:VersionStage=AWSPREVIOUS")
	_, _ = c.PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{SecretId: aws.String(secretARN), SecretString: aws.String("x")})
	checkDerived(t, derive(), "secretsmanager:PutSecretValue "+secretARN+" secretsmanager:SecretId="+secretARN)
	_, _ = c.DescribeSecret(context.Background(), &secretsmanager.DescribeSecretInput{SecretId: aws.String("missing")})
	checkDerived(t, derive(), "secretsmanager:DescribeSecret arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing-?????? secretsmanager:SecretId=missing")
	_, _ = c.ListSecrets(context.Background(), &secretsmanager.ListSecretsInput{})
	checkDerived(t, derive(), "secretsmanager:ListSecrets *")
	checkDerived(t, []identity.Request{iampolicy.SecretValue(env, true, secretARN, "")},
		"secretsmanager:GetSecretValue "+secretARN+" secretsmanager:SecretId="+secretARN)
}

func TestServiceRequests(t *testing.T) {
	stream := "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/sandgate-connect:log-stream:2026/12/06/[$LATEST]abc"
	checkDerived(t, iampolicy.LogsWrite(env, "/aws/lambda/sandgate-connect", "2026/12/06/[$LATEST]abc"),
		"logs:CreateLogStream "+stream, "logs:PutLogEvents "+stream)
	eni := "arn:aws:ec2:eu-west-1:123456789012:network-interface/eni-0123"
	checkDerived(t, iampolicy.LambdaNetworkInterfaces(env, "eni-0123", []string{"subnet-1"}, []string{"sg-1"}),
		"ec2:DescribeNetworkInterfaces *", "ec2:DescribeSubnets *",
		"ec2:CreateNetworkInterface "+eni,
		"ec2:CreateNetworkInterface arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-1",
		"ec2:CreateNetworkInterface arn:aws:ec2:eu-west-1:123456789012:security-group/sg-1",
		"ec2:AssignPrivateIpAddresses "+eni, "ec2:UnassignPrivateIpAddresses "+eni, "ec2:DeleteNetworkInterface "+eni)
	repo := "arn:aws:ecr:eu-west-1:123456789012:repository/sandgate"
	checkDerived(t, iampolicy.ECRPull(env, "sandgate"),
		"ecr:GetAuthorizationToken *", "ecr:BatchCheckLayerAvailability "+repo, "ecr:GetDownloadUrlForLayer "+repo, "ecr:BatchGetImage "+repo)
}
