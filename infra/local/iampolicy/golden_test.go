package iampolicy_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stslocal"
)

// The golden suite: tricky cases of IAM's evaluation, each through the real
// iam-simulate, most of them on requests the real SDK made and the derivations read.

// authorize asks the shared evaluator about every request for p.
func authorize(t *testing.T, p *identity.Principal, reqs []identity.Request) error {
	t.Helper()
	return iampolicy.AuthorizeAll(context.Background(), sharedEvaluator(t), p, reqs)
}

func wantAllowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want allowed", what, err)
	}
}

func wantDenied(t *testing.T, what string, err error, explicit bool) *identity.DeniedError {
	t.Helper()
	var de *identity.DeniedError
	if !errors.As(err, &de) {
		t.Errorf("%s: %v, want a denial", what, err)
		return nil
	}
	if de.Explicit != explicit {
		t.Errorf("%s: explicit = %v, want %v", what, de.Explicit, explicit)
	}
	if !errors.Is(err, identity.ErrDenied) {
		t.Errorf("%s: not ErrDenied", what)
	}
	return de
}

// ownItems is the per-user isolation policy: table items whose partition key is the
// caller's own USER#<userId> tag.
func ownItems(extra map[string]any) json.RawMessage {
	cond := map[string]any{"ForAllValues:StringEquals": map[string]any{"dynamodb:LeadingKeys": []string{"USER#${aws:PrincipalTag/userId}"}}}
	for k, v := range extra {
		cond[k] = v
	}
	return doc(map[string]any{"Sid": "OwnItems", "Effect": "Allow",
		"Action":   []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:PartiQLSelect"},
		"Resource": tableARN, "Condition": cond})
}

var u1 = map[string]string{"userId": "u1"}

func scanAndPartiQL(t *testing.T) (scan, partiql []identity.Request) {
	scan = ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table)})
		return err
	})
	partiql = ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.ExecuteStatement(ctx, &dynamodb.ExecuteStatementInput{Statement: aws.String(`SELECT * FROM "sandgate-table"`)})
		return err
	})
	return scan, partiql
}

func getItem(t *testing.T, pk string) []identity.Request {
	return ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key(pk, "SANDBOX")})
		return err
	})
}

func TestGolden_ForAllValuesPassesKeylessScanAndPartiQL(t *testing.T) {
	p := session(t, stackAuthority(), "Tenant", nil, u1, nil, ownItems(nil))
	scan, partiql := scanAndPartiQL(t)
	// AWS supplies no dynamodb:LeadingKeys to a Scan or a PartiQL statement, and
	// ForAllValues over an absent key is true: both pass, as they do on AWS.
	wantAllowed(t, "Scan", authorize(t, p, scan))
	wantAllowed(t, "PartiQL SELECT", authorize(t, p, partiql))
	wantAllowed(t, "GetItem of own item", authorize(t, p, getItem(t, "USER#u1")))
	wantDenied(t, "GetItem of another user's item", authorize(t, p, getItem(t, "USER#u2")), false)
}

func TestGolden_NullGuardOnLeadingKeys(t *testing.T) {
	p := session(t, stackAuthority(), "Guarded", nil, u1, nil,
		ownItems(map[string]any{"Null": map[string]any{"dynamodb:LeadingKeys": "false"}}))
	scan, partiql := scanAndPartiQL(t)
	wantDenied(t, "Scan", authorize(t, p, scan), false)
	wantDenied(t, "PartiQL SELECT", authorize(t, p, partiql), false)
	wantAllowed(t, "GetItem of own item", authorize(t, p, getItem(t, "USER#u1")))
}

func TestGolden_TransactionDeniedAsAWhole(t *testing.T) {
	p := session(t, stackAuthority(), "Tenant", nil, u1, nil, ownItems(nil))
	tx := func(other string) []identity.Request {
		return ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
			_, err := c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
				{Put: &ddbtypes.Put{TableName: aws.String(table), Item: key("USER#u1", "INBOX#1")}},
				{Update: &ddbtypes.Update{TableName: aws.String(table), Key: key(other, "INBOXMETA"), UpdateExpression: aws.String("SET n = :n"),
					ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": s("1")}}},
				{ConditionCheck: &ddbtypes.ConditionCheck{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX"), ConditionExpression: aws.String("attribute_exists(pk)")}},
			}})
			return err
		})
	}
	wantAllowed(t, "transaction on own items", authorize(t, p, tx("USER#u1")))
	de := wantDenied(t, "transaction with one item of another user", authorize(t, p, tx("USER#u2")), false)
	if de != nil && de.Action != "dynamodb:UpdateItem" {
		t.Errorf("denied action = %s, want the foreign item's dynamodb:UpdateItem", de.Action)
	}
}

func TestGolden_PolicyVariableInResource(t *testing.T) {
	p := session(t, stackAuthority(), "Files", nil, u1, nil, doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject",
		"Resource": "arn:aws:s3:::" + bucket + "/users/${aws:PrincipalTag/userId}/*"}))
	get := func(k string) []identity.Request {
		return s3Call(t, func(ctx context.Context, c *s3.Client) error {
			_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
			return err
		})
	}
	wantAllowed(t, "own prefix", authorize(t, p, get("users/u1/files/a")))
	wantDenied(t, "another user's prefix", authorize(t, p, get("users/u2/files/a")), false)
	// A session without the tag resolves nothing: the variable matches nothing.
	untagged := session(t, stackAuthority(), "Files", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject",
		"Resource": "arn:aws:s3:::" + bucket + "/users/${aws:PrincipalTag/userId}/*"}))
	wantDenied(t, "untagged session", authorize(t, untagged, get("users/u1/files/a")), false)
}

func TestGolden_NotAction(t *testing.T) {
	p := session(t, stackAuthority(), "NotIAM", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "NotAction": []string{"iam:*", "sts:*"}, "Resource": "*"}))
	wantAllowed(t, "s3:GetObject", authorize(t, p, []identity.Request{{Action: "s3:GetObject", Resource: "arn:aws:s3:::" + bucket + "/k"}}))
	wantDenied(t, "iam:PassRole", authorize(t, p, iampolicy.PassRole(env, false, iampolicy.ECSTasksService, taskRole)), false)
}

func TestGolden_IfExists(t *testing.T) {
	p := session(t, stackAuthority(), "IfExists", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": tableARN,
		"Condition": map[string]any{"StringEqualsIfExists": map[string]any{"dynamodb:ReturnValues": []string{"NONE", "UPDATED_NEW"}}}}))
	update := func(rv ddbtypes.ReturnValue) []identity.Request {
		return ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
			_, err := c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX"),
				UpdateExpression: aws.String("SET a = :a"), ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":a": s("x")}, ReturnValues: rv})
			return err
		})
	}
	wantAllowed(t, "no ReturnValues (key absent)", authorize(t, p, update("")))
	wantAllowed(t, "UPDATED_NEW", authorize(t, p, update(ddbtypes.ReturnValueUpdatedNew)))
	wantDenied(t, "ALL_OLD", authorize(t, p, update(ddbtypes.ReturnValueAllOld)), false)
}

func TestGolden_ExplicitDenyBeatsAllow(t *testing.T) {
	p := session(t, stackAuthority(), "Denier", nil, nil, nil,
		doc(map[string]any{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}),
		doc(map[string]any{"Sid": "NoDelete", "Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": tableARN}))
	del := ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("USER#u1", "SANDBOX")})
		return err
	})
	if de := wantDenied(t, "DeleteItem", authorize(t, p, del), true); de != nil && de.Statement != "Denier/p2#NoDelete" {
		t.Errorf("deciding statement = %q, want Denier/p2#NoDelete", de.Statement)
	}
	wantAllowed(t, "GetItem", authorize(t, p, getItem(t, "USER#u1")))
}

func TestGolden_SessionPolicyIntersects(t *testing.T) {
	a := stackAuthority()
	role := doc(map[string]any{"Effect": "Allow", "Action": []string{"dynamodb:GetItem", "dynamodb:PutItem"}, "Resource": tableARN})
	sessionPolicy := doc(map[string]any{"Effect": "Allow", "Action": []string{"dynamodb:GetItem", "s3:GetObject"}, "Resource": "*"})
	p := session(t, a, "Scoped", nil, nil, sessionPolicy, role)
	put := ddbCall(t, func(ctx context.Context, c *dynamodb.Client) error {
		_, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: key("USER#u1", "X")})
		return err
	})
	wantAllowed(t, "GetItem (role and session allow)", authorize(t, p, getItem(t, "USER#u1")))
	wantDenied(t, "PutItem (role allows, session does not)", authorize(t, p, put), false)
	// And the session policy grants nothing the role lacks.
	wantDenied(t, "s3:GetObject (session allows, role does not)",
		authorize(t, p, []identity.Request{{Action: "s3:GetObject", Resource: "arn:aws:s3:::" + bucket + "/k"}}), false)
	// The same role without a session policy may put.
	wantAllowed(t, "PutItem without a session policy", authorize(t, session(t, a, "Scoped", nil, nil, nil), put))
}

func TestGolden_SecureTransport(t *testing.T) {
	p := session(t, stackAuthority(), "TLSOnly", nil, nil, nil,
		doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}),
		doc(map[string]any{"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}}}))
	call := func(tls bool) []identity.Request {
		reqs, err := iampolicy.S3(env, iampolicy.Call{Method: http.MethodGet, URL: &url.URL{Path: "/" + bucket + "/k"}, Header: http.Header{}, TLS: tls})
		if err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	wantDenied(t, "over plain HTTP", authorize(t, p, call(false)), true)
	wantAllowed(t, "over TLS", authorize(t, p, call(true)))
}

func TestGolden_TrustServicePrincipals(t *testing.T) {
	a := stackAuthority()
	lambdaTrust := doc(map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})
	fn, err := a.AddRole(identity.Role{Name: "FnRole", Trust: lambdaTrust})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := a.AddRole(identity.Role{Name: "SchedRole", Trust: doc(map[string]any{"Effect": "Allow",
		"Principal": map[string]any{"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole",
		"Condition": map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": account}}})})
	if err != nil {
		t.Fatal(err)
	}
	e := sharedEvaluator(t)
	ctx := context.Background()
	wantAllowed(t, "lambda assumes its function role", e.Trust(ctx, iampolicy.TrustRequest{Role: fn, Service: iampolicy.LambdaService, SessionName: "sandgate-connect"}))
	wantDenied(t, "ecs-tasks assumes a lambda role", e.Trust(ctx, iampolicy.TrustRequest{Role: fn, Service: iampolicy.ECSTasksService}), false)
	wantAllowed(t, "scheduler for this account", e.Trust(ctx, iampolicy.TrustRequest{Role: sched, Service: iampolicy.SchedulerService}))
	wantDenied(t, "scheduler for another account", e.Trust(ctx, iampolicy.TrustRequest{Role: sched, Service: iampolicy.SchedulerService, SourceAccount: "999999999999"}), false)
	// A role session is not the service, whatever its policies say.
	p := session(t, a, "Anyone", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}))
	wantDenied(t, "a role session assumes a lambda role", e.Trust(ctx, iampolicy.TrustRequest{Role: fn, Caller: p}), false)
}

func TestGolden_RoleToRoleTrust(t *testing.T) {
	a := stackAuthority()
	mayAssume := doc(map[string]any{"Effect": "Allow", "Action": []string{"sts:AssumeRole", "sts:TagSession"}, "Resource": "*"})
	caller := session(t, a, "Caller", nil, nil, nil)              // no identity policy at all
	granted := session(t, a, "Granted", nil, nil, nil, mayAssume) // may assume anything
	stranger := session(t, a, "Stranger", nil, nil, nil, mayAssume)
	byARN, err := a.AddRole(identity.Role{Name: "ByARN", Trust: doc(map[string]any{"Effect": "Allow",
		"Principal": map[string]any{"AWS": []string{a.RoleARN("Caller"), a.RoleARN("Granted")}}, "Action": "sts:AssumeRole"})})
	if err != nil {
		t.Fatal(err)
	}
	byAccount, err := a.AddRole(identity.Role{Name: "ByAccount", Trust: doc(map[string]any{"Effect": "Allow",
		"Principal": map[string]any{"AWS": "arn:aws:iam::" + account + ":root"}, "Action": []string{"sts:AssumeRole", "sts:TagSession"}})})
	if err != nil {
		t.Fatal(err)
	}
	e := sharedEvaluator(t)
	ctx := context.Background()
	// A trust policy naming the caller's role suffices in the same account.
	wantAllowed(t, "named role, no identity policy", e.Trust(ctx, iampolicy.TrustRequest{Role: byARN, Caller: caller, SessionName: "x"}))
	wantDenied(t, "a role the trust policy does not name", e.Trust(ctx, iampolicy.TrustRequest{Role: byARN, Caller: stranger}), false)
	// Tags need sts:TagSession in the trust policy too.
	wantDenied(t, "session tags without sts:TagSession in trust", e.Trust(ctx, iampolicy.TrustRequest{Role: byARN, Caller: granted, Tags: u1}), false)
	// Trusting the account delegates to the caller's own policies.
	wantDenied(t, "account trust, no identity policy", e.Trust(ctx, iampolicy.TrustRequest{Role: byAccount, Caller: caller}), false)
	wantAllowed(t, "account trust, identity policy allows", e.Trust(ctx, iampolicy.TrustRequest{Role: byAccount, Caller: granted, Tags: u1}))
	// The stslocal hook answers the same.
	trust := e.STSTrust(ctx, env)
	if err := trust(stslocal.TrustRequest{Role: byAccount, Caller: granted, Tags: u1}); err != nil {
		t.Errorf("stslocal hook: %v", err)
	}
}

func TestGolden_PassRoleToService(t *testing.T) {
	a := stackAuthority()
	launcher := []json.RawMessage{doc(
		map[string]any{"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:eu-west-1:123456789012:task-definition/sandgate-sandbox:*",
			"Condition": map[string]any{"ArnEquals": map[string]any{"ecs:cluster": clusterARN}}},
		map[string]any{"Effect": "Allow", "Action": "ecs:TagResource", "Resource": "arn:aws:ecs:eu-west-1:123456789012:task/sandgate/*",
			"Condition": map[string]any{"StringEquals": map[string]any{"ecs:CreateAction": "RunTask"}}},
		map[string]any{"Effect": "Allow", "Action": "iam:PassRole", "Resource": []string{taskRole, execRole},
			"Condition": map[string]any{"StringEquals": map[string]any{"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
	)}
	p := session(t, a, "Launcher", nil, nil, nil, launcher...)
	run := func(cluster string, override string) []identity.Request {
		return ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
			in := &ecs.RunTaskInput{Cluster: aws.String(cluster), TaskDefinition: aws.String("sandgate-sandbox"),
				Tags: []ecstypes.Tag{{Key: aws.String("user"), Value: aws.String("u1")}}}
			if override != "" {
				in.Overrides = &ecstypes.TaskOverride{TaskRoleArn: aws.String(override)}
			}
			_, err := c.RunTask(ctx, in)
			return err
		})
	}
	wantAllowed(t, "RunTask passing the task roles to ECS", authorize(t, p, run(clusterARN, "")))
	de := wantDenied(t, "RunTask passing another role", authorize(t, p, run(clusterARN, "arn:aws:iam::123456789012:role/Admin")), false)
	if de != nil && de.Action != "iam:PassRole" {
		t.Errorf("denied %s, want iam:PassRole", de.Action)
	}
	wantDenied(t, "RunTask on another cluster", authorize(t, p, run("other", "")), false)
	// The same role passed to another service is not allowed.
	wantDenied(t, "PassRole to Lambda", authorize(t, p, iampolicy.PassRole(env, false, iampolicy.LambdaService, taskRole)), false)
}

func TestGolden_S3PrefixStringLike(t *testing.T) {
	p := session(t, stackAuthority(), "Lister", nil, nil, nil, doc(
		map[string]any{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::" + bucket,
			"Condition": map[string]any{"StringLike": map[string]any{"s3:prefix": []string{"users/*"}}}},
		map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::" + bucket + "/users/*"}))
	list := func(prefix *string) []identity.Request {
		return s3Call(t, func(ctx context.Context, c *s3.Client) error {
			_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: prefix})
			return err
		})
	}
	wantAllowed(t, "prefix users/u1/", authorize(t, p, list(aws.String("users/u1/"))))
	wantDenied(t, "prefix other/", authorize(t, p, list(aws.String("other/"))), false)
	wantDenied(t, "no prefix", authorize(t, p, list(nil)), false)

	// A missing key: 404 for a caller that may list the key's prefix, 403 for one
	// that may only read.
	call := iampolicy.Call{Method: http.MethodGet, URL: &url.URL{Path: "/" + bucket + "/users/u1/.last-sync"}, Header: http.Header{}}
	missing := []identity.Request{iampolicy.S3MissingKey(env, call, bucket, "users/u1/.last-sync")}
	wantAllowed(t, "lister asks about a missing key (404)", authorize(t, p, missing))
	reader := session(t, stackAuthority(), "Reader", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::" + bucket + "/users/*"}))
	wantDenied(t, "reader asks about a missing key (403)", authorize(t, reader, missing), false)
}

func TestGolden_Unsupported(t *testing.T) {
	p := session(t, stackAuthority(), "Wide", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "*", "Resource": "*"}))
	err := authorize(t, p, []identity.Request{{Action: "dynamodb:FlyToTheMoon", Resource: tableARN}})
	var ue *identity.UnsupportedError
	if !errors.Is(err, identity.ErrUnsupported) || !errors.As(err, &ue) {
		t.Errorf("unknown action: %v, want ErrUnsupported", err)
	}
	odd := session(t, stackAuthority(), "Odd", nil, nil, nil, doc(map[string]any{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*",
		"Condition": map[string]any{"StringEqualz": map[string]any{"aws:PrincipalType": "AssumedRole"}}}))
	if err := authorize(t, odd, getItem(t, "USER#u1")); !errors.Is(err, identity.ErrUnsupported) {
		t.Errorf("unknown condition operator: %v, want ErrUnsupported", err)
	}
}

func TestGolden_ListTasksOnStar(t *testing.T) {
	p := session(t, stackAuthority(), "Cleaner", nil, nil, nil, doc(map[string]any{"Sid": "List", "Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
		"Condition": map[string]any{"ArnEquals": map[string]any{"ecs:cluster": clusterARN}}}))
	list := func(cluster string) []identity.Request {
		return ecsCall(t, func(ctx context.Context, c *ecs.Client) error {
			_, err := c.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(cluster)})
			return err
		})
	}
	wantAllowed(t, "ListTasks on the cluster", authorize(t, p, list(clusterARN)))
	other := list("other")
	wantDenied(t, "ListTasks on another cluster", authorize(t, p, other), false)
	// iam-simulate keeps no analysis of a denied "*": the nearest statement is the one
	// whose action matches, marked unexplained.
	r := other[0]
	r.Principal = p
	d, err := sharedEvaluator(t).Decide(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Unexplained || len(d.Nearest) != 1 || d.Nearest[0].String() != "Cleaner/p1#List" {
		t.Errorf("decision = %+v, want unexplained with Cleaner/p1#List nearest", d)
	}
}
