package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
)

// The tests in this file check the credential vendor, the sandbox role and the relay
// with real sessions of the template's roles against the running functions: what a
// task (or a workload holding what its agent holds) can get and reach.

// fakeTask is a task id as ECS makes them, and its ARN in the stack's cluster.
func fakeTask(s *testkit.Stack) (id, arn string) {
	id = randomHex(16)
	return id, fmt.Sprintf("arn:aws:ecs:us-east-1:000000000000:task/%s/%s", s.Cluster, id)
}

// leaseFor takes user's lease as Connect does and, unless taskARN is "", records the
// task; the lease is released when the test ends.
func leaseFor(t *testing.T, s *testkit.Stack, user, taskARN string) state.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := s.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if taskARN != "" {
		if err := s.Store.SetTask(ctx, l, taskARN); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = s.Store.Release(context.Background(), l, "test over") })
	return l
}

// vendAs asks the stack's vendor for l's credentials, signed with cfg.
func vendAs(t *testing.T, s *testkit.Stack, cfg aws.Config, r vend.Request) (vend.Credentials, error) {
	t.Helper()
	c, err := vend.NewClient(s.FunctionURL(t, "VendFunction"), cfg.Credentials, cfg.Region, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Credentials(context.Background(), r)
}

func vendRequest(l state.Lease) vend.Request {
	return vend.Request{UserID: l.UserID, Generation: l.Generation, LeaseToken: l.Token}
}

// sessionOf is an AWS configuration of the stack signed with vended credentials.
func sessionOf(s *testkit.Stack, c vend.Credentials) aws.Config {
	cfg := s.AWS.Copy()
	cfg.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}, nil
	})
	cfg.RetryMaxAttempts = 1
	return cfg
}

// The vendor hands a task its user's credentials only when the task is the one the
// record names, with the record's lease and generation; the credentials reach that
// user's record and nobody else's.
func TestVend_OnlyTheRecordedTaskWithTheCurrentLease(t *testing.T) {
	t.Parallel()
	vendsOnlyToTheHolder(t, apps.Get(t))
}

// vendsOnlyToTheHolder checks the vendor of s: credentials for the recorded task with
// the current lease (with storage credentials in R2 mode, none with S3), refusals for
// every other task, generation, user and lease.
func vendsOnlyToTheHolder(t *testing.T, s *testkit.Stack) {
	t.Helper()
	ctx := context.Background()
	alice, bob, carol := "user_vend"+randomHex(4), "user_vendb"+randomHex(4), "user_vendc"+randomHex(4)
	taskA, arnA := fakeTask(s)
	taskB, arnB := fakeTask(s)
	la := leaseFor(t, s, alice, arnA)
	lb := leaseFor(t, s, bob, arnB)
	lc := leaseFor(t, s, carol, "") // launched, not yet recorded

	creds, err := vendAs(t, s, s.TaskRoleSession(t, taskA), vendRequest(la))
	if err != nil {
		t.Fatalf("the recorded task: %v", err)
	}
	if (creds.Storage != nil) != (s.R2 != nil) || creds.Expiration.IsZero() {
		t.Errorf("credentials: storage %v (R2 mode %v), expiration %v", creds.Storage != nil, s.R2 != nil, creds.Expiration)
	}
	ddb := s.DynamoDBAs(sessionOf(s, creds))
	if _, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table), Key: itemKey(alice, "SANDBOX")}); err != nil {
		t.Errorf("alice's session reads alice's record: %v", err)
	}
	if _, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table), Key: itemKey(bob, "SANDBOX")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Errorf("alice's session reads bob's record: %v", err)
	}

	stale := vendRequest(la)
	stale.Generation++ // not the record's
	other := vendRequest(la)
	other.UserID = bob
	for name, c := range map[string]struct {
		cfg  aws.Config
		req  vend.Request
		want error
	}{
		"another task, the right lease":      {s.TaskRoleSession(t, taskB), vendRequest(la), vend.ErrRefused},
		"another generation":                 {s.TaskRoleSession(t, taskA), stale, vend.ErrRefused},
		"another user, own lease":            {s.TaskRoleSession(t, taskA), other, vend.ErrRefused},
		"another user's lease":               {s.TaskRoleSession(t, taskA), vendRequest(lb), vend.ErrRefused},
		"a task not recorded yet":            {s.TaskRoleSession(t, taskA), vendRequest(lc), vend.ErrNotRecorded},
		"a task role session, bob's for bob": {s.TaskRoleSession(t, taskB), vendRequest(lb), nil},
	} {
		_, err := vendAs(t, s, c.cfg, c.req)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	// A replayed token: alice's sandbox has moved on.
	if err := s.Store.Release(ctx, la, "test"); err != nil {
		t.Fatal(err)
	}
	taskA2, arnA2 := fakeTask(s)
	la2 := leaseFor(t, s, alice, arnA2)
	if _, err := vendAs(t, s, s.TaskRoleSession(t, taskA), vendRequest(la)); !errors.Is(err, vend.ErrRefused) {
		t.Errorf("the old task with the old lease: %v", err)
	}
	if _, err := vendAs(t, s, s.TaskRoleSession(t, taskA2), vendRequest(la2)); err != nil {
		t.Errorf("the new task: %v", err)
	}
}

// Only a task role may call the vendor, and only through its URL: a sandbox session is
// refused by Lambda, and the Invoke API — whose event, caller included, the caller
// writes — is refused to the task role.
func TestVend_OnlyTaskRolesThroughTheURL(t *testing.T) {
	t.Parallel()
	s := apps.Get(t)
	user := "user_vendurl" + randomHex(4)
	task, arn := fakeTask(s)
	l := leaseFor(t, s, user, arn)
	body, _ := json.Marshal(vendRequest(l))

	sandbox := s.SandboxSession(t, user, task)
	fu, err := funcurl.NewClient(s.FunctionURL(t, "VendFunction"), sandbox.Credentials, sandbox.Region, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fu.Post(context.Background(), vend.PathCredentials, body)
	if err != nil || resp.Status != http.StatusForbidden || !strings.Contains(string(resp.Body), "Forbidden") {
		t.Errorf("a sandbox session calls the vendor: %d %s %v", resp.Status, resp.Body, err)
	}

	forged := fmt.Sprintf(`{"version":"2.0","rawPath":"/credentials","requestContext":{"http":{"method":"POST"},`+
		`"authorizer":{"iam":{"userArn":"arn:aws:sts::000000000000:assumed-role/sandgate-local-TaskRole/%s"}}},"body":%q}`, task, body)
	for _, role := range []aws.Config{s.TaskRoleSession(t, task), sandbox} {
		cl := lambda.NewFromConfig(role, func(o *lambda.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_LAMBDA"]) })
		for _, fn := range []string{"VendFunction", "RelayFunction"} {
			_, err := cl.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String(s.Name(fn)), Payload: []byte(forged)})
			if testkit.ErrorCode(err) != "AccessDeniedException" {
				t.Errorf("the Invoke API on %s: %v, want AccessDeniedException", fn, err)
			}
		}
	}
}

func itemKey(user, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "USER#" + user}, "sk": &types.AttributeValueMemberS{Value: sk},
	}
}

// A sandbox's own scoped session — what a compromised agent holds — reaches its user's
// items and objects and nothing of another user's: not by key, not by a prefix that
// another user's id extends, not by Scan, PartiQL, a batch or a transaction, not the
// capacity counter, not another user's connections directly or through the relay. The
// victim's items and objects are unchanged, byte for byte; the task role reaches none.
func TestSandboxSession_CannotTouchAnotherUser(t *testing.T) {
	t.Parallel()
	s := apps.Get(t)
	f := newVictim(t, s)
	cfg := s.SandboxSession(t, f.attacker, f.task)
	attackAnotherUser(t, s, f, cfg, s.StorageAs(cfg.Credentials))
}

// victim is an attacker and a victim whose id extends the attacker's (users/<attacker>/
// must not cover users/<victim>/), each holding a lease recorded for a task of its own;
// the victim has a connection and an object.
type victim struct {
	attacker, victim string
	task, victimTask string // task ids
	lease            state.Lease
	key              string // the victim's object
}

func newVictim(t *testing.T, s *testkit.Stack) *victim {
	t.Helper()
	ctx := context.Background()
	attacker := "user_scope" + randomHex(4)
	f := &victim{attacker: attacker, victim: attacker + "b", key: "users/" + attacker + "b/files/secret.txt"}
	var arn, victimARN string
	f.task, arn = fakeTask(s)
	f.lease = leaseFor(t, s, f.attacker, arn)
	f.victimTask, victimARN = fakeTask(s)
	leaseFor(t, s, f.victim, victimARN)
	if _, err := s.Store.AddConnection(ctx, f.victim, "victimconn"+randomHex(4)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(f.key), Body: strings.NewReader("victim's")}); err != nil {
		t.Fatal(err)
	}
	return f
}

// attackAnotherUser has what a compromised agent of f.attacker's task holds — cfg, its
// AWS session, and bucket, a client of the storage signed with its storage credentials
// — go after f.victim's items, objects and connections. It checks that the attacker's
// own are within reach, that every attempt on the victim's fails, that the task role
// reaches no data, and that the victim's items and objects are unchanged, byte for byte.
func attackAnotherUser(t *testing.T, s *testkit.Stack, f *victim, cfg aws.Config, bucket *s3.Client) {
	t.Helper()
	ctx := context.Background()
	attacker, victim, victimKey := f.attacker, f.victim, f.key
	items, objects := victimState(t, s, victim), victimObjects(t, s, victim)
	ddb := s.DynamoDBAs(cfg)
	table := aws.String(s.Table)
	denied := func(what string, err error, code string) {
		t.Helper()
		if got := testkit.ErrorCode(err); got != code {
			t.Errorf("%s: %v (%s), want %s", what, err, got, code)
		}
	}
	// Its own.
	if _, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, Key: itemKey(attacker, "SANDBOX")}); err != nil {
		t.Errorf("own record: %v", err)
	}
	own := "users/" + attacker + "/files/mine.txt"
	for _, k := range []string{own, own + ".2"} {
		if _, err := bucket.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(k), Body: strings.NewReader("mine")}); err != nil {
			t.Errorf("own object: %v", err)
		}
	}
	if _, err := bucket.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String("users/" + attacker + "/")}); err != nil {
		t.Errorf("own prefix: %v", err)
	}

	const ddbDenied, s3Denied = "AccessDeniedException", "AccessDenied"
	_, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, Key: itemKey(victim, "SANDBOX")})
	denied("GetItem of the victim's record", err, ddbDenied)
	_, err = ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, Key: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "CAPACITY"}, "sk": &types.AttributeValueMemberS{Value: "SANDBOXES"}}})
	denied("GetItem of the capacity counter", err, ddbDenied)
	_, err = ddb.Query(ctx, &dynamodb.QueryInput{TableName: table, KeyConditionExpression: aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: "USER#" + victim}}})
	denied("Query of the victim's items", err, ddbDenied)
	_, err = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: table, Key: itemKey(victim, "SANDBOX"),
		UpdateExpression: aws.String("SET #s = :s"), ExpressionAttributeNames: map[string]string{"#s": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": &types.AttributeValueMemberS{Value: "PURGING"}}})
	denied("UpdateItem of the victim's record to PURGING", err, ddbDenied)
	_, err = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: table, Key: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "CAPACITY"}, "sk": &types.AttributeValueMemberS{Value: "SANDBOXES"}},
		UpdateExpression: aws.String("ADD live :n"), ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: "1000"}}})
	denied("UpdateItem of the capacity counter", err, ddbDenied)
	_, err = ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: table, Key: itemKey(victim, "SANDBOX")})
	denied("DeleteItem of the victim's record", err, ddbDenied)
	_, err = ddb.Scan(ctx, &dynamodb.ScanInput{TableName: table})
	denied("Scan", err, ddbDenied)
	// Every user's record, projected: only cleanup may list it.
	_, err = ddb.Scan(ctx, &dynamodb.ScanInput{TableName: table, IndexName: aws.String(state.SandboxIndex)})
	denied("Scan of the Sandboxes index", err, ddbDenied)
	_, err = ddb.ExecuteStatement(ctx, &dynamodb.ExecuteStatementInput{Statement: aws.String(fmt.Sprintf(`SELECT * FROM "%s" WHERE pk = 'USER#%s'`, s.Table, victim))})
	denied("PartiQL SELECT", err, ddbDenied)
	_, err = ddb.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
		s.Table: {Keys: []map[string]types.AttributeValue{itemKey(attacker, "SANDBOX"), itemKey(victim, "SANDBOX")}}}})
	denied("BatchGetItem", err, ddbDenied)
	_, err = ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Update: &types.Update{TableName: table, Key: itemKey(attacker, "SANDBOX"), UpdateExpression: aws.String("SET x = :x"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":x": &types.AttributeValueMemberS{Value: "1"}}}},
		{Delete: &types.Delete{TableName: table, Key: itemKey(victim, "SANDBOX")}},
	}})
	denied("TransactWriteItems with the victim's record", err, ddbDenied)

	// Objects: by key, by copy either way, by a batch delete, by multipart, by listing.
	b := aws.String(s.Bucket)
	_, err = bucket.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(victimKey)})
	denied("GetObject of the victim's", err, s3Denied)
	if _, err = bucket.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String(victimKey)}); testkit.StatusCode(err) != http.StatusForbidden {
		t.Errorf("HeadObject of the victim's: %v, want 403", err)
	}
	_, err = bucket.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String(victimKey), Body: strings.NewReader("overwritten")})
	denied("PutObject over the victim's", err, s3Denied)
	_, err = bucket.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: b, Key: aws.String(victimKey)})
	denied("DeleteObject of the victim's", err, s3Denied)
	stolen := "users/" + attacker + "/files/stolen.txt"
	_, err = bucket.CopyObject(ctx, &s3.CopyObjectInput{Bucket: b, Key: aws.String(stolen), CopySource: aws.String(s.Bucket + "/" + victimKey)})
	denied("CopyObject from the victim's into its own prefix", err, s3Denied)
	if _, err := s.S3Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String(stolen)}); testkit.StatusCode(err) != http.StatusNotFound {
		t.Errorf("the copy of the victim's object exists: %v", err)
	}
	_, err = bucket.CopyObject(ctx, &s3.CopyObjectInput{Bucket: b, Key: aws.String(victimKey), CopySource: aws.String(s.Bucket + "/" + own)})
	denied("CopyObject of its own over the victim's", err, s3Denied)
	_, err = bucket.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String(victimKey)})
	denied("CreateMultipartUpload over the victim's", err, s3Denied)
	// A batch naming its own key and the victim's: S3 decides key by key, R2 (locally)
	// refuses the whole request; either way the victim's key is not deleted.
	del, err := bucket.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: b, Delete: &s3types.Delete{Objects: []s3types.ObjectIdentifier{
		{Key: aws.String(own + ".2")}, {Key: aws.String(victimKey)}}}})
	switch {
	case err != nil:
		denied("DeleteObjects naming the victim's key", err, s3Denied)
	case slices.ContainsFunc(del.Deleted, func(d s3types.DeletedObject) bool { return aws.ToString(d.Key) == victimKey }) ||
		!slices.ContainsFunc(del.Errors, func(e s3types.Error) bool {
			return aws.ToString(e.Key) == victimKey && aws.ToString(e.Code) == s3Denied
		}):
		t.Errorf("DeleteObjects naming the victim's key: deleted %d, errors %d; want the victim's key refused", len(del.Deleted), len(del.Errors))
	}
	for _, prefix := range []string{"users/" + victim + "/", "users/" + victim, "users/" + attacker, "users/", ""} {
		_, err = bucket.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: b, Prefix: aws.String(prefix)})
		denied("ListObjectsV2 of "+prefix, err, s3Denied)
	}
	_, err = bucket.ListObjects(ctx, &s3.ListObjectsInput{Bucket: b, Prefix: aws.String("users/")})
	denied("ListObjects of users/", err, s3Denied)

	// Connections: no management API right at all, and the relay acts for the user's
	// recorded task only.
	conns, _ := s.Store.Connections(ctx, victim)
	mgmt := apigatewaymanagementapi.NewFromConfig(cfg, func(o *apigatewaymanagementapi.Options) {
		o.BaseEndpoint = aws.String(s.Gateway.ManagementEndpoint())
	})
	_, err = mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(conns[0].ConnectionID), Data: []byte("x")})
	if code := testkit.ErrorCode(err); code != "AccessDeniedException" && code != "ForbiddenException" {
		t.Errorf("PostToConnection with the session: %v", err)
	}
	_, err = mgmt.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(conns[0].ConnectionID)})
	if code := testkit.ErrorCode(err); code != "AccessDeniedException" && code != "ForbiddenException" {
		t.Errorf("DeleteConnection with the session: %v", err)
	}
	rc, err := connrelay.NewClient(s.FunctionURL(t, "RelayFunction"), victim, cfg.Credentials, cfg.Region, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay.Relay{API: rc, Conns: s.Store}
	if err := r.Send(ctx, conns[0].ConnectionID, []byte("hostile")); !errors.Is(err, connrelay.ErrRefused) {
		t.Errorf("the relay, claiming the victim: %v, want ErrRefused", err)
	}
	if err := r.Close(ctx, conns[0].ConnectionID); !errors.Is(err, connrelay.ErrRefused) {
		t.Errorf("the relay closing the victim's connection: %v, want ErrRefused", err)
	}
	rc, _ = connrelay.NewClient(s.FunctionURL(t, "RelayFunction"), attacker, cfg.Credentials, cfg.Region, nil)
	if err := (&relay.Relay{API: rc, Conns: s.Store}).Send(ctx, conns[0].ConnectionID, []byte("hostile")); !errors.Is(err, relay.ErrGone) {
		t.Errorf("the relay, as itself, to the victim's connection: %v, want ErrGone", err)
	}
	// The victim's task's own session is refused by the relay for the attacker too.
	vcfg := s.SandboxSession(t, victim, f.victimTask)
	rc, _ = connrelay.NewClient(s.FunctionURL(t, "RelayFunction"), attacker, vcfg.Credentials, vcfg.Region, nil)
	if err := (&relay.Relay{API: rc, Conns: s.Store}).Send(ctx, "x", []byte("x")); !errors.Is(err, connrelay.ErrRefused) {
		t.Errorf("a task claiming another user at the relay: %v, want ErrRefused", err)
	}

	// The task role reaches no data at all. R2 knows no AWS key: the task role and the
	// sandbox's AWS session are strangers to it.
	troles := s.DynamoDBAs(s.TaskRoleSession(t, f.task))
	_, err = troles.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, Key: itemKey(attacker, "SANDBOX")})
	denied("the task role's GetItem", err, ddbDenied)
	storageDenied := s3Denied
	if s.R2 != nil {
		storageDenied = "Unauthorized"
		_, err = s.StorageAs(cfg.Credentials).GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(own)})
		denied("the sandbox's AWS session at R2", err, storageDenied)
	}
	_, err = s.StorageAs(s.TaskRoleSession(t, f.task).Credentials).GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(own)})
	denied("the task role's GetObject", err, storageDenied)

	if got := victimState(t, s, victim); !bytes.Equal(got, items) {
		t.Errorf("the victim's items changed:\n%s\nwas\n%s", got, items)
	}
	if got := victimObjects(t, s, victim); got != objects {
		t.Errorf("the victim's objects changed: %s, was %s", got, objects)
	}
}

// victimState is every item under the user's partition key, as JSON.
func victimState(t *testing.T, s *testkit.Stack, user string) []byte {
	t.Helper()
	out, err := dynamodb.NewFromConfig(s.AWS).Query(context.Background(), &dynamodb.QueryInput{TableName: aws.String(s.Table),
		KeyConditionExpression: aws.String("pk = :pk"), ConsistentRead: aws.Bool(true),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: "USER#" + user}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(out.Items)
	return b
}

// victimObjects is every object under the user's prefix, keys and bytes.
func victimObjects(t *testing.T, s *testkit.Stack, user string) string {
	t.Helper()
	var b strings.Builder
	for _, k := range s.Keys(t, "users/"+user+"/") {
		out, err := s.S3Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(out.Body)
		out.Body.Close()
		fmt.Fprintf(&b, "%s=%q;", k, data)
	}
	return b.String()
}

// A task that asks before the launcher has recorded it hears "not yet" and asks again
// with backoff: once the record names it, it gets its credentials and runs.
func TestVend_AgentWaitsUntilItsTaskIsRecorded(t *testing.T) {
	t.Parallel()
	e := newAgentEnv(t, nil)
	user := e.user("unrecorded")
	ctx := context.Background()
	l, err := e.s.Store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.s.Store.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	arn, err := e.launcher.Launch(ctx, launcher.Spec{UserID: user, LeaseToken: l.Token, Generation: l.Generation})
	if err != nil {
		t.Fatal(err)
	}
	sb := e.task(user, l, arn)
	taskID := arn[strings.LastIndex(arn, "/")+1:]
	deferred := func(line testkit.Line) bool {
		return line.Str("reason") == vend.ReasonNotRecorded && strings.HasSuffix(line.Str("caller"), "/"+taskID)
	}
	awaitCtx, cancel := context.WithTimeout(ctx, coldStart)
	defer cancel()
	if _, err := e.s.Output.Await(awaitCtx, deferred); err != nil {
		t.Fatalf("the vendor never deferred the unrecorded task: %v", err)
	}
	if rec, err := e.s.Store.Get(ctx, user); err != nil || rec.Version != before.Version {
		t.Fatalf("the agent wrote before it had credentials: %+v %v", rec, err)
	}
	if err := e.s.Store.SetTask(ctx, l, arn); err != nil {
		t.Fatal(err)
	}
	sb.waitState(state.Running)
}
