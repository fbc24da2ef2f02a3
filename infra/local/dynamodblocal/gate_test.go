package dynamodblocal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/state"
)

const (
	account = "000000000000"
	region  = "us-east-1"
	appRole = "sandgate-test-AppRole"
)

// appPolicy lets a session read and write only the items whose partition key is its
// own user's (the session tag userId), as the product's roles do, and Scan under the
// same ForAllValues condition, which a Scan passes because it has no leading keys.
const appPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "OwnItems", "Effect": "Allow",
     "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan"],
     "Resource": "arn:aws:dynamodb:us-east-1:000000000000:table/*",
     "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["USER#${aws:PrincipalTag/userId}"]}}},
    {"Sid": "Describe", "Effect": "Allow", "Action": "dynamodb:DescribeTable", "Resource": "*"}
  ]
}`

const allowAll = `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}`

// offsetClock is the Authority's clock: real time plus an offset a test may move, so
// sessions can be issued in the past while requests are signed now.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// gatedFixture is the test binary's DynamoDB Local behind an enforcing front, with
// its Authority and policy evaluator; tests add sessions and tables of their own.
type gatedFixture struct {
	srv   *dynamodblocal.Server
	auth  *identity.Authority
	eval  *iampolicy.Evaluator
	clock *offsetClock
	admin identity.Credentials
	logs  *testkit.Logs
}

var gatedShared struct {
	once sync.Once
	fx   *gatedFixture
	err  error
}

// gated returns the shared enforcing server, starting it on first use; TestMain
// stops it.
func gated(t *testing.T) *gatedFixture {
	t.Helper()
	gatedShared.once.Do(func() { gatedShared.fx, gatedShared.err = startGated() })
	if gatedShared.err != nil {
		t.Fatalf("enforcing DynamoDB Local: %v", gatedShared.err)
	}
	return gatedShared.fx
}

func startGated() (*gatedFixture, error) {
	ctx := context.Background()
	fx := &gatedFixture{clock: &offsetClock{}, logs: &testkit.Logs{}}
	fx.auth = identity.New(account, region)
	fx.auth.Now = fx.clock.Now
	if _, err := fx.auth.AddRole(identity.Role{Name: appRole, Policies: []identity.Policy{{Name: appRole + "/items", Document: json.RawMessage(appPolicy)}}}); err != nil {
		return nil, err
	}
	var err error
	if fx.admin, _, err = fx.auth.AddUser("operator", []identity.Policy{{Name: "operator/all", Document: json.RawMessage(allowAll)}}); err != nil {
		return nil, err
	}
	root, err := iampolicy.RepoRoot()
	if err != nil {
		return nil, err
	}
	fx.eval, err = iampolicy.Start(ctx, filepath.Join(root, iampolicy.ScriptPath), filepath.Join(root, iampolicy.NodeModulesPath),
		iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	fx.srv, err = dynamodblocal.Start(ctx, dynamodblocal.Options{Authority: fx.auth, Authorizer: fx.eval, Logger: fx.logs.Logger()})
	if err != nil {
		_ = fx.eval.Close()
		return nil, err
	}
	return fx, nil
}

func stopGated() {
	if fx := gatedShared.fx; fx != nil {
		_ = fx.srv.Stop()
		_ = fx.eval.Close()
	}
}

// session issues a session of the app role for userID.
func (fx *gatedFixture) session(t *testing.T, userID string) identity.Credentials {
	t.Helper()
	c, _, err := fx.auth.Issue(identity.SessionSpec{RoleARN: fx.auth.RoleARN(appRole), SessionName: "test-" + userID, Tags: map[string]string{"userId": userID}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client is a DynamoDB client of the front signing with c, trying each call once and
// recording what the SDK logs (checksum warnings among it).
func (fx *gatedFixture) client(t *testing.T, c identity.Credentials, log *sdkLog, optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	t.Helper()
	cl, err := fx.srv.Client(context.Background(), append([]func(*dynamodb.Options){func(o *dynamodb.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
		o.RetryMaxAttempts = 1
		if log != nil {
			o.Logger = log.logger()
		}
	}}, optFns...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// table creates a table with hash key "pk" (the product's) through the front, as the
// operator.
func (fx *gatedFixture) table(t *testing.T) string {
	t.Helper()
	name := dynamodblocal.TableName(t)
	createTable(t, fx.client(t, fx.admin, nil), name)
	return name
}

func userKey(id string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "USER#" + id}}
}

func userItem(id, v string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "USER#" + id}, "v": &types.AttributeValueMemberS{Value: v}}
}

// items returns the table's items, read by the operator.
func (fx *gatedFixture) items(t *testing.T, table string) int {
	t.Helper()
	out, err := fx.client(t, fx.admin, nil).Scan(context.Background(), &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Items)
}

// wrongBody rewrites every request body after it is signed: a man in the middle who
// changes what a valid signature covers.
type wrongBody struct{ from, to string }

func (w wrongBody) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, []byte(w.from), []byte(w.to))
	r = r.Clone(r.Context())
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return http.DefaultTransport.RoundTrip(r)
}

// Every way a signature can be wrong gets DynamoDB's own error, as the SDK parses it,
// with the CRC32 header every DynamoDB response carries (no checksum warning).
func TestGate_Refusals_DynamoDBErrorShapes(t *testing.T) {
	fx := gated(t)
	table := fx.table(t)
	good := fx.session(t, "user_a")
	// A session issued two hours ago (by the Authority's clock) expired an hour ago.
	fx.clock.offset.Store(int64(-2 * time.Hour))
	old := fx.session(t, "user_a")
	fx.clock.offset.Store(0)

	cases := []struct {
		name   string
		creds  identity.Credentials
		optFns []func(*dynamodb.Options)
		want   string
	}{
		{"unsigned", identity.Credentials{}, []func(*dynamodb.Options){func(o *dynamodb.Options) { o.Credentials = aws.AnonymousCredentials{} }}, "MissingAuthenticationTokenException"},
		{"unknown key", identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: good.SecretAccessKey, SessionToken: good.SessionToken}, nil, "UnrecognizedClientException"},
		{"no session token", identity.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey}, nil, "UnrecognizedClientException"},
		{"wrong secret", identity.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: fx.admin.SecretAccessKey, SessionToken: good.SessionToken}, nil, "InvalidSignatureException"},
		{"tampered body", good, []func(*dynamodb.Options){func(o *dynamodb.Options) {
			o.HTTPClient = &http.Client{Transport: wrongBody{"USER#user_a", "USER#user_b"}}
		}}, "InvalidSignatureException"},
		{"expired session", old, nil, "ExpiredTokenException"},
		{"other region", good, []func(*dynamodb.Options){func(o *dynamodb.Options) { o.Region = "eu-west-1" }}, "InvalidSignatureException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var log sdkLog
			c := fx.client(t, tc.creds, &log, tc.optFns...)
			_, err := c.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_a", "x")})
			if got := testkit.ErrorCode(err); got != tc.want {
				t.Fatalf("PutItem: error code %q (%v), want %q", got, err, tc.want)
			}
			if n := log.checksumWarnings(); n != 0 {
				t.Fatalf("refusal without a valid X-Amz-Crc32: %q", log.lines)
			}
		})
	}
	if n := fx.items(t, table); n != 0 {
		t.Fatalf("%d items written by refused requests", n)
	}
	// The key id of a refused request is logged; its secret, token and signature never.
	for _, secret := range []string{good.SecretAccessKey, good.SessionToken, fx.admin.SecretAccessKey} {
		if strings.Contains(fx.logs.String(), secret) {
			t.Fatal("a secret or session token reached the log")
		}
	}
}

// The wire shape of a refusal: HTTP 400, JSON 1.0, the full __type, a request id and
// the body's CRC32.
func TestGate_Unsigned_WireShape(t *testing.T) {
	fx := gated(t)
	req, err := http.NewRequest(http.MethodPost, fx.srv.Endpoint()+"/", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.ListTables")
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e map[string]string
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/x-amz-json-1.0" ||
		e["__type"] != "com.amazon.coral.service#MissingAuthenticationTokenException" || e["message"] == "" ||
		resp.Header.Get("X-Amzn-Requestid") == "" {
		t.Fatalf("status %d, headers %v, body %s", resp.StatusCode, resp.Header, body)
	}
	if got, want := resp.Header.Get("X-Amz-Crc32"), strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10); got != want {
		t.Fatalf("X-Amz-Crc32 %q, want %q", got, want)
	}
}

// The policy decides: a session writes and reads its own user's items, another user's
// are refused with AccessDeniedException naming the session, action and table, and
// nothing is written.
func TestGate_Authorize_OwnItemsOnly(t *testing.T) {
	fx := gated(t)
	table := fx.table(t)
	ctx := context.Background()
	var log sdkLog
	c := fx.client(t, fx.session(t, "user_a"), &log)
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_a", "mine")}); err != nil {
		t.Fatalf("own item: %v", err)
	}
	out, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: userKey("user_a")})
	if err != nil || out.Item["v"].(*types.AttributeValueMemberS).Value != "mine" {
		t.Fatalf("GetItem own item: %v %v", out, err)
	}
	_, err = c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_b", "theirs")})
	if testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("another user's item: %v, want AccessDeniedException", err)
	}
	want := fmt.Sprintf("is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:%s:%s:table/%s", region, account, table)
	if !strings.Contains(err.Error(), "assumed-role/"+appRole+"/test-user_a") || !strings.Contains(err.Error(), want) {
		t.Fatalf("denial message %q, want the session and %q", err, want)
	}
	if _, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: userKey("user_b")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("GetItem of another user's item: %v", err)
	}
	// ListTables is not granted at all.
	if _, err := c.ListTables(ctx, &dynamodb.ListTablesInput{}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("ListTables: %v", err)
	}
	if n := fx.items(t, table); n != 1 {
		t.Fatalf("%d items, want only user_a's", n)
	}
	if n := log.checksumWarnings(); n != 0 {
		t.Fatalf("checksum warnings: %q", log.lines)
	}
}

// A transaction is authorised item by item and refused whole when one item is
// forbidden: nothing of it is written.
func TestGate_TransactWriteItems_OneForbiddenItemRefusesAll(t *testing.T) {
	fx := gated(t)
	table := fx.table(t)
	ctx := context.Background()
	c := fx.client(t, fx.session(t, "user_a"), nil)
	put := func(id string) types.TransactWriteItem {
		return types.TransactWriteItem{Put: &types.Put{TableName: aws.String(table), Item: userItem(id, "tx")}}
	}
	_, err := c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{put("user_a"), put("user_b")}})
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "dynamodb:PutItem") {
		t.Fatalf("transaction with another user's item: %v, want AccessDeniedException on its PutItem", err)
	}
	if n := fx.items(t, table); n != 0 {
		t.Fatalf("a refused transaction wrote %d items", n)
	}
	// A condition check is an item of its own: one on another user's item refuses
	// the transaction too.
	_, err = c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		put("user_a"),
		{ConditionCheck: &types.ConditionCheck{TableName: aws.String(table), Key: userKey("user_b"), ConditionExpression: aws.String("attribute_not_exists(pk)")}},
	}})
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "dynamodb:ConditionCheckItem") {
		t.Fatalf("transaction checking another user's item: %v, want AccessDeniedException on its ConditionCheckItem", err)
	}
	_, err = c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{put("user_a")}})
	if err != nil {
		t.Fatalf("own item's transaction: %v", err)
	}
	if n := fx.items(t, table); n != 1 {
		t.Fatalf("%d items after the allowed transaction", n)
	}
}

// A Scan carries no dynamodb:LeadingKeys, so the ForAllValues condition lets it
// through, as on AWS: reproduced, not corrected.
func TestGate_Scan_PassesForAllValuesLeadingKeys(t *testing.T) {
	fx := gated(t)
	table := fx.table(t)
	ctx := context.Background()
	if _, err := fx.client(t, fx.admin, nil).PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_b", "theirs")}); err != nil {
		t.Fatal(err)
	}
	out, err := fx.client(t, fx.session(t, "user_a"), nil).Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table)})
	if err != nil || len(out.Items) != 1 {
		t.Fatalf("Scan: %v, %v", out, err)
	}
}

// The partition key comes from each table's own schema (DescribeTable), not from a
// fixed name; a keyed call on a table that does not exist is DynamoDB's
// ResourceNotFoundException.
func TestGate_Schema_PerTable(t *testing.T) {
	fx := gated(t)
	ctx := context.Background()
	name := dynamodblocal.TableName(t)
	_, err := fx.client(t, fx.admin, nil).CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("owner"), AttributeType: types.ScalarAttributeTypeS}, {AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("owner"), KeyType: types.KeyTypeHash}, {AttributeName: aws.String("pk"), KeyType: types.KeyTypeRange}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := fx.client(t, fx.session(t, "user_a"), nil)
	item := func(owner string) map[string]types.AttributeValue {
		// pk names user_a in both: only the partition key "owner" may decide.
		return map[string]types.AttributeValue{"owner": &types.AttributeValueMemberS{Value: owner}, "pk": &types.AttributeValueMemberS{Value: "USER#user_a"}}
	}
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(name), Item: item("USER#user_a")}); err != nil {
		t.Fatalf("own partition: %v", err)
	}
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(name), Item: item("USER#user_b")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("another user's partition: %v", err)
	}
	_, err = c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("no-such-table-" + name), Key: userKey("user_a")})
	if testkit.ErrorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("GetItem on a missing table: %v", err)
	}
}

// Stop and Restart (the chaos tests' outage) keep the gate: the endpoint is the same,
// unsigned and denied requests are still refused, allowed ones still pass.
func TestGate_Restart_KeepsTheGate(t *testing.T) {
	fx := gated(t)
	ctx := context.Background()
	endpoint := fx.srv.Endpoint()
	c := fx.client(t, fx.session(t, "user_a"), nil)
	if err := fx.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTables(ctx, &dynamodb.ListTablesInput{}); err == nil || testkit.ErrorCode(err) != "" {
		t.Fatalf("stopped front answered: %v", err)
	}
	if err := fx.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if fx.srv.Endpoint() != endpoint {
		t.Fatalf("endpoint moved from %s to %s", endpoint, fx.srv.Endpoint())
	}
	anon := fx.client(t, identity.Credentials{}, nil, func(o *dynamodb.Options) { o.Credentials = aws.AnonymousCredentials{} })
	if _, err := anon.ListTables(ctx, &dynamodb.ListTablesInput{}); testkit.ErrorCode(err) != "MissingAuthenticationTokenException" {
		t.Fatalf("unsigned after restart: %v", err)
	}
	table := fx.table(t) // the in-memory emulator came back empty
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_b", "x")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("denied after restart: %v", err)
	}
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: userItem("user_a", "x")}); err != nil {
		t.Fatalf("allowed after restart: %v", err)
	}
}

// An operator's credentials work with the AWS CLI against the front; a wrong secret
// is refused with DynamoDB's error.
func TestGate_AWSCLI_ListTables(t *testing.T) {
	testkit.AWSCLI(t)
	fx := gated(t)
	table := fx.table(t)
	stdout, stderr, err := testkit.RunAWSCLI(t, region, fx.admin, "dynamodb", "list-tables", "--endpoint-url", fx.srv.Endpoint(), "--output", "json")
	if err != nil {
		t.Fatalf("aws dynamodb list-tables: %v\n%s", err, stderr)
	}
	var out struct{ TableNames []string }
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("output %q: %v", stdout, err)
	}
	found := false
	for _, n := range out.TableNames {
		found = found || n == table
	}
	if !found {
		t.Fatalf("list-tables %v lacks %s", out.TableNames, table)
	}
	wrong := fx.admin
	wrong.SecretAccessKey = strings.Repeat("x", len(wrong.SecretAccessKey))
	_, stderr, err = testkit.RunAWSCLI(t, region, wrong, "dynamodb", "list-tables", "--endpoint-url", fx.srv.Endpoint())
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) || !strings.Contains(stderr, "InvalidSignatureException") {
		t.Fatalf("wrong secret: %v, stderr %q; want InvalidSignatureException", err, stderr)
	}
}

// The stock client used by other packages (static local credentials) is refused by
// an enforcing front: nothing reaches the emulator unsigned by the Authority.
func TestGate_StaticLocalCredentials_Refused(t *testing.T) {
	fx := gated(t)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(fx.srv.Endpoint())...)
	if err != nil {
		t.Fatal(err)
	}
	c := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
	if _, err := c.ListTables(context.Background(), &dynamodb.ListTablesInput{}); testkit.ErrorCode(err) != "UnrecognizedClientException" {
		t.Fatalf("ListTables with local/local: %v", err)
	}
}

// The product's own store works through an enforcing front, with every call it makes
// (table set-up with its TTL and waiter, the lease's conditional updates, the inbox's
// transactions and queries) derived and authorised: here for an operator allowed all.
func TestGate_ProductStore_ThroughTheGate(t *testing.T) {
	fx := gated(t)
	ctx := context.Background()
	c := fx.client(t, fx.admin, nil)
	table := dynamodblocal.TableName(t)
	if err := state.CreateTable(ctx, c, table); err != nil {
		t.Fatal(err)
	}
	s := state.New(c, table)
	l, err := s.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := s.AddConnection(ctx, "user_a", "conn-1"); err != nil {
		t.Fatalf("AddConnection: %v", err)
	}
	if _, err := s.Enqueue(ctx, "user_a", "conn-1", []byte(`{"hello":1}`)); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if items, err := s.Inbox(ctx, "user_a"); err != nil || len(items) != 1 {
		t.Fatalf("Inbox: %v, %v", items, err)
	}
	if err := s.Release(ctx, l, "test"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := s.ListSandboxes(ctx, func(*state.Sandbox) error { return nil }); err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
}
