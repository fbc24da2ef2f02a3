package templatecheck_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/state"
)

// Grants are written "action resource [condition]", with references as the template
// writes them: ${Table.Arn} is !GetAtt Table.Arn, ${Cluster} is !Ref Cluster.
const (
	arn       = "arn:${AWS::Partition}"
	table     = "${Table.Arn}"
	taskDefs  = arn + ":ecs:${AWS::Region}:${AWS::AccountId}:task-definition/${AWS::StackName}-sandbox:*"
	tasks     = arn + ":ecs:${AWS::Region}:${AWS::AccountId}:task/${Cluster}/*"
	conns     = arn + ":execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/${StageName}/%s/@connections/*"
	bucket    = arn + ":s3:::${BucketName}"
	ec2Own    = arn + ":ec2:${AWS::Region}:${AWS::AccountId}:"
	inCluster = ` {"ArnEquals":{"ecs:cluster":"${Cluster.Arn}"}}`
	toECS     = ` {"StringEquals":{"iam:PassedToService":"ecs-tasks.amazonaws.com"}}`
	// signing is the signing secret, by its name (its ARN ends in a random suffix).
	signing = "secretsmanager:GetSecretValue " + arn + ":secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SigningSecretName}-??????"
)

func logs(group string) []string {
	return []string{"logs:CreateLogStream ${" + group + ".Arn}", "logs:PutLogEvents ${" + group + ".Arn}"}
}

func tableGrants(actions ...string) []string {
	var out []string
	for _, a := range actions {
		out = append(out, "dynamodb:"+a+" "+table)
	}
	return out
}

// ensure is what a function that starts sandboxes needs: RunTask of this stack's task
// definition in this cluster, tagging only as part of RunTask, passing only the two
// sandbox roles, only to ECS, and stopping this cluster's tasks (the task of a lease a
// start took over).
var ensure = []string{
	"ecs:RunTask " + taskDefs + inCluster,
	"ecs:TagResource " + tasks + ` {"StringEquals":{"ecs:CreateAction":"RunTask"}}`,
	"iam:PassRole ${TaskExecutionRole.Arn}" + toECS,
	"iam:PassRole ${TaskRole.Arn}" + toECS,
	"ecs:StopTask " + tasks,
}

// vpc is what Lambda needs to attach a function to the VPC. AWS requires "*" for the
// Describe actions; the others are held to this account and region.
var vpc = []string{
	"ec2:DescribeNetworkInterfaces *", "ec2:DescribeSubnets *",
	"ec2:CreateNetworkInterface " + ec2Own + "network-interface/*", "ec2:CreateNetworkInterface " + ec2Own + "subnet/*",
	"ec2:CreateNetworkInterface " + ec2Own + "security-group/*", "ec2:DeleteNetworkInterface " + ec2Own + "network-interface/*",
	"ec2:AssignPrivateIpAddresses " + ec2Own + "network-interface/*", "ec2:UnassignPrivateIpAddresses " + ec2Own + "network-interface/*",
}

func post() string        { return "execute-api:ManageConnections " + fmt.Sprintf(conns, "POST") }
func deleteConns() string { return "execute-api:ManageConnections " + fmt.Sprintf(conns, "DELETE") }
func getConns() string    { return "execute-api:ManageConnections " + fmt.Sprintf(conns, "GET") }

// invokeURL is what calling function fn's IAM-authenticated function URL takes, and
// nothing more: InvokeFunctionUrl for an AWS_IAM URL, and InvokeFunction (which Lambda
// also requires) only through the URL, never the Invoke API, whose event, caller
// included, the caller writes.
func invokeURL(fn string) []string {
	a := arn + ":lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-" + fn
	return []string{
		"lambda:InvokeFunctionUrl " + a + ` {"StringEquals":{"lambda:FunctionUrlAuthType":"AWS_IAM"}}`,
		"lambda:InvokeFunction " + a + ` {"Bool":{"lambda:InvokedViaFunctionUrl":"true"}}`,
	}
}

// ownUser is the condition that holds a sandbox session to its user's table items: the
// partition key of every item named is USER#<the session's userId tag>, and one is named.
const ownUser = ` {"ForAllValues:StringEquals":{"dynamodb:LeadingKeys":["USER#${aws:PrincipalTag/userId}"]},"Null":{"dynamodb:LeadingKeys":"false"}}`

// ownUpdate is ownUser for an update, which also names only the attributes the agent's
// own writes name (state.HolderAttributes, in its order), and must tell IAM which: a
// sandbox can rewrite neither the task its record names (which cleanup and a takeover
// stop) nor the user it claims.
func ownUpdate() string {
	attrs, _ := json.Marshal(state.HolderAttributes)
	return ` {"ForAllValues:StringEquals":{"dynamodb:Attributes":` + string(attrs) +
		`,"dynamodb:LeadingKeys":["USER#${aws:PrincipalTag/userId}"]},"Null":{"dynamodb:Attributes":"false","dynamodb:LeadingKeys":"false"}}`
}

// leading is the condition that holds table actions to items of the partitions keys.
func leading(keys ...string) string {
	b, _ := json.Marshal(keys)
	return ` {"ForAllValues:StringEquals":{"dynamodb:LeadingKeys":` + string(b) + `}}`
}

// webhookKeys holds a table grant to the webhook's message ids.
const webhookKeys = ` {"ForAllValues:StringLike":{"dynamodb:LeadingKeys":["WEBHOOK#*"]},"Null":{"dynamodb:LeadingKeys":"false"}}`

// claim is what a start that may claim a warm pool task needs beside its table
// grants: the pool's waiting tasks read, and a refill asked of the pool function.
func claim() []string {
	return []string{
		"dynamodb:Query " + table + leading("POOL"),
		"lambda:InvokeFunction " + arn + ":lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-pool",
	}
}

// invokeConnect lets a function send the Connect function its notices: Connect's own
// asynchronous ones, and Message's (synchronous ensure notices, asynchronous restarts).
var invokeConnect = "lambda:InvokeFunction " + arn + ":lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-connect"

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// expectedGrants is every role's exact permissions under a scenario. Table actions
// follow internal/state's calls; a function that needs another one changes this list,
// on purpose, in the same commit as the template.
func expectedGrants(scenario string) map[string][]string {
	s3 := scenario == "s3" // AWS S3 through the roles; R2 through stored credentials
	g := map[string][]string{
		// The functions that verify signed URLs read the signing secret, and nothing else does.
		// The authorizer also reads the user's revocation, in their access item only.
		"AuthorizeRole": concat(logs("AuthorizeLogGroup"), []string{signing,
			"dynamodb:GetItem " + table + ` {"ForAllValues:StringLike":{"dynamodb:LeadingKeys":["ACCESS#*"]},"Null":{"dynamodb:LeadingKeys":"false"}}`}),
		"ConnectRole": concat(logs("ConnectLogGroup"),
			tableGrants("GetItem", "PutItem", "UpdateItem", "DeleteItem"), ensure, claim(),
			// Closing a connection over its user's cap, checking the counted ones.
			[]string{post(), deleteConns(), getConns(), invokeConnect}, vpc),
		// No ensure: the Message function starts no task; Connect does it for it.
		"MessageRole": concat(logs("MessageLogGroup"),
			tableGrants("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"),
			// Closing a connection that keeps being rate limited.
			[]string{post(), deleteConns(), invokeConnect}, vpc),
		// UpdateItem: the connection no longer counts in its user's access item.
		"DisconnectRole": concat(logs("DisconnectLogGroup"), tableGrants("GetItem", "DeleteItem", "UpdateItem"), vpc),
		"StatusRole":     concat(logs("StatusLogGroup"), []string{signing}, tableGrants("GetItem")),
		// A claim deletes the pool item and writes the claim item in the lease's
		// transaction; Connect's table grants cover both, Prewarm's are held to them.
		"PrewarmRole": concat(logs("PrewarmLogGroup"), []string{signing}, tableGrants("GetItem", "UpdateItem"), ensure, claim(),
			[]string{"dynamodb:DeleteItem " + table + leading("POOL"), "dynamodb:PutItem " + table + leading("POOLCLAIM")}, vpc),
		// The refill: the pool's items, its lock and the counter, nothing of a user;
		// launching and stopping pool tasks.
		"PoolRole": concat(logs("PoolLogGroup"), []string{
			"dynamodb:Query " + table + leading("POOL", "POOLLOCK", "CAPACITY"),
			"dynamodb:UpdateItem " + table + leading("POOL", "POOLLOCK", "CAPACITY"),
			"dynamodb:DeleteItem " + table + leading("POOL", "POOLLOCK", "CAPACITY"),
		}, ensure),
		"PoolScheduleRole": {"lambda:InvokeFunction ${PoolFunction.Arn}"},
		"CleanupRole": concat(logs("CleanupLogGroup"),
			tableGrants("GetItem", "UpdateItem", "DeleteItem", "Query", "Scan"),
			// Its listing: the Sandboxes index, and the leases read whole.
			[]string{"dynamodb:Scan " + table + "/index/Sandboxes", "dynamodb:BatchGetItem " + table},
			[]string{
				// ListTasks authorizes against "*"; the cluster condition narrows it.
				"ecs:ListTasks *" + inCluster,
				"ecs:DescribeTasks " + tasks, "ecs:StopTask " + tasks,
				post(),
			}),
		"CleanupScheduleRole": {"lambda:InvokeFunction ${CleanupFunction.Arn}"},
		// The user-deletion webhook: its secret, the ids of the messages acted on, and
		// the erase function.
		"WebhookRole": concat(logs("WebhookLogGroup"), []string{
			"secretsmanager:GetSecretValue " + arn + ":secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${UserWebhookSecretName}-??????",
			"dynamodb:PutItem " + table + webhookKeys, "dynamodb:DeleteItem " + table + webhookKeys,
			"lambda:InvokeFunction " + arn + ":lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-erase",
		}),
		// delete-user: the user's items (revocation, purge lock, erasure), their task
		// stopped, their connections closed, their prefix deleted.
		"EraseRole": concat(logs("EraseLogGroup"), tableGrants("GetItem", "UpdateItem", "DeleteItem", "Query"),
			[]string{"ecs:StopTask " + tasks, deleteConns()}),
		// A task's end: its sandbox's record and the capacity counter, its user's
		// connections told (a gone one's record removed).
		"TaskEventsRole": concat(logs("TaskEventsLogGroup"), tableGrants("GetItem", "UpdateItem", "Query", "DeleteItem"),
			[]string{post()}),
		"TaskExecutionRole": concat([]string{
			"ecr:GetAuthorizationToken *", // no resource type: "*" only
			"ecr:BatchCheckLayerAvailability " + arn + ":ecr:${AWS::Region}:${AWS::AccountId}:repository/*",
			"ecr:GetDownloadUrlForLayer " + arn + ":ecr:${AWS::Region}:${AWS::AccountId}:repository/*",
			"ecr:BatchGetImage " + arn + ":ecr:${AWS::Region}:${AWS::AccountId}:repository/*",
		}, logs("SandboxLogGroup")),
		// A task's own role asks the vendor, and nothing else.
		"TaskRole": invokeURL("vend"),
		// The vendor reads the user's record; SandboxRole's trust lets it assume that.
		// A pool task's registration: its task described, its pool item written.
		"VendRole": concat(logs("VendLogGroup"), tableGrants("GetItem"),
			[]string{"ecs:DescribeTasks " + tasks, "dynamodb:UpdateItem " + table + leading("POOL")}),
		"RelayRole": concat(logs("RelayLogGroup"), tableGrants("GetItem", "DeleteItem"),
			[]string{post(), deleteConns(), getConns()}),
		// Every sandbox's session: its user's items only (no Scan, PartiQL or Batch
		// action), replies through the relay.
		"SandboxRole": concat([]string{
			"dynamodb:GetItem " + table + ownUser, "dynamodb:UpdateItem " + table + ownUpdate(),
			"dynamodb:DeleteItem " + table + ownUser, "dynamodb:Query " + table + ownUser,
		}, invokeURL("relay")),
	}
	if s3 {
		// Cleanup's backup step: a user's objects read (the marker, each object's
		// metadata, the copies' source) and the backups area written; the erase
		// function deletes a user's backups. No other role names backups/.
		usersAndBackups := ` {"StringLike":{"s3:prefix":["users/*","backups/*"]}}`
		backups := bucket + "/backups/*"
		g["CleanupRole"] = append(g["CleanupRole"], "s3:ListBucket "+bucket+usersAndBackups,
			"s3:GetObject "+bucket+"/users/*", "s3:DeleteObject "+bucket+"/users/*",
			"s3:GetObject "+backups, "s3:PutObject "+backups, "s3:DeleteObject "+backups, "s3:AbortMultipartUpload "+backups)
		g["EraseRole"] = append(g["EraseRole"], "s3:ListBucket "+bucket+usersAndBackups, "s3:DeleteObject "+bucket+"/users/*",
			"s3:GetObject "+backups, "s3:PutObject "+backups, "s3:DeleteObject "+backups)
		// The user's prefix with its trailing slash: user_a's never reaches user_ab's.
		// In !Sub, ${!…} is a literal ${…}: IAM's policy variable.
		own := bucket + "/users/${!aws:PrincipalTag/userId}/*"
		g["SandboxRole"] = append(g["SandboxRole"], "s3:ListBucket "+bucket+` {"StringLike":{"s3:prefix":["users/${aws:PrincipalTag/userId}/*"]}}`,
			"s3:GetObject "+own, "s3:PutObject "+own, "s3:DeleteObject "+own)
	} else {
		// The parent R2 key: the vendor reads it to mint prefix-scoped credentials, and
		// Cleanup to delete a purged user's prefix.
		g["VendRole"] = append(g["VendRole"], "secretsmanager:GetSecretValue ${StorageCredentialsSecretArn}")
		g["CleanupRole"] = append(g["CleanupRole"], "secretsmanager:GetSecretValue ${StorageCredentialsSecretArn}")
		g["EraseRole"] = append(g["EraseRole"], "secretsmanager:GetSecretValue ${StorageCredentialsSecretArn}")
	}
	return g
}

// starAllowed are the actions AWS authorizes only against "*"; each needs the reason
// above where it is granted.
var starAllowed = set("ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ecr:GetAuthorizationToken", "ecs:ListTasks")

// trust is the service each role is for.
var trust = map[string]string{
	"AuthorizeRole": "lambda.amazonaws.com", "ConnectRole": "lambda.amazonaws.com", "MessageRole": "lambda.amazonaws.com",
	"DisconnectRole": "lambda.amazonaws.com", "StatusRole": "lambda.amazonaws.com", "PrewarmRole": "lambda.amazonaws.com",
	"CleanupRole": "lambda.amazonaws.com", "CleanupScheduleRole": "scheduler.amazonaws.com",
	"PoolRole": "lambda.amazonaws.com", "PoolScheduleRole": "scheduler.amazonaws.com",
	"TaskEventsRole":    "lambda.amazonaws.com",
	"TaskExecutionRole": "ecs-tasks.amazonaws.com", "TaskRole": "ecs-tasks.amazonaws.com",
	"VendRole": "lambda.amazonaws.com", "RelayRole": "lambda.amazonaws.com",
	"WebhookRole": "lambda.amazonaws.com", "EraseRole": "lambda.amazonaws.com",
	// The region's API Gateway logging role; AWS's managed policy, see the template.
	"ApiGatewayCloudWatchRole": "apigateway.amazonaws.com",
}

// managedAllowed are the only managed policies any role may carry.
var managedAllowed = map[string]string{
	"ApiGatewayCloudWatchRole": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
}

// Each role grants exactly the expected actions on the expected resources: no
// wildcard action, no "*" resource where a narrower ARN exists, nothing extra.
func TestRoles_LeastPrivilege(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			for _, typ := range []string{"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"} {
				for _, r := range raw.ofType(t, typ) {
					t.Errorf("%s is an %s: keep every permission inline in its role, where this test reads it", r.LogicalID, typ)
				}
			}
			want := expectedGrants(sc.name)
			roles := raw.ofType(t, "AWS::IAM::Role")
			seen := set()
			for _, r := range roles {
				seen[r.LogicalID] = true
				checkTrust(t, raw, r)
				if m := template.Lookup(r.Properties, "ManagedPolicyArns"); m != nil {
					got := canonical(raw.render(t, m))
					if wantM, ok := managedAllowed[r.LogicalID]; !ok || got != canonical([]any{wantM}) {
						t.Errorf("%s: managed policies %s; only inline policies are checked", r.LogicalID, got)
					}
				}
				if template.Lookup(r.Properties, "PermissionsBoundary") != nil || template.Lookup(r.Properties, "RoleName") != nil {
					t.Errorf("%s: unexpected PermissionsBoundary or RoleName", r.LogicalID)
				}
				if _, ok := managedAllowed[r.LogicalID]; ok {
					continue
				}
				got, bad := grants(t, raw, r)
				for _, b := range bad {
					t.Error(b)
				}
				if missing, extra := diff(set(want[r.LogicalID]...), got); len(missing)+len(extra) > 0 {
					t.Errorf("%s:\n  missing: %s\n  extra:   %s", r.LogicalID, strings.Join(missing, "\n           "), strings.Join(extra, "\n           "))
				}
			}
			for id := range want {
				if !seen[id] {
					t.Errorf("no role %s", id)
				}
			}
			for id := range trust {
				if !seen[id] && (id != "ApiGatewayCloudWatchRole" || raw.value(t, "ConfigureApiGatewayAccount") == "true") {
					t.Errorf("no role %s", id)
				}
			}
		})
	}
}

// grants flattens a role's inline policies into "action resource [condition]" and
// lists what the least-privilege rules forbid, whatever the expected list says.
func grants(t *testing.T, raw rawTemplate, r *template.Resource) (map[string]bool, []string) {
	t.Helper()
	out := set()
	var bad []string
	for _, p := range list(raw.render(t, template.Lookup(r.Properties, "Policies"))) {
		doc, _ := p.(map[string]any)["PolicyDocument"].(map[string]any)
		for _, s := range list(doc["Statement"]) {
			st := s.(map[string]any)
			for _, k := range []string{"NotAction", "NotResource", "NotPrincipal"} {
				if st[k] != nil {
					bad = append(bad, fmt.Sprintf("%s: %s is not allowed", r.LogicalID, k))
				}
			}
			if st["Effect"] != "Allow" {
				bad = append(bad, fmt.Sprintf("%s: statement with effect %v", r.LogicalID, st["Effect"]))
				continue
			}
			cond := ""
			if c, ok := st["Condition"]; ok {
				cond = " " + canonical(c)
			}
			for _, a := range asStrings(st["Action"]) {
				if strings.ContainsAny(a, "*?") {
					bad = append(bad, fmt.Sprintf("%s: wildcard action %s", r.LogicalID, a))
				}
				for _, res := range asStrings(st["Resource"]) {
					if res == "*" && !starAllowed[a] {
						bad = append(bad, fmt.Sprintf("%s: %s on \"*\", but it takes a resource ARN", r.LogicalID, a))
					}
					if res == "*" && a == "ecs:ListTasks" && !strings.Contains(cond, "ecs:cluster") {
						bad = append(bad, fmt.Sprintf("%s: ecs:ListTasks on \"*\" without an ecs:cluster condition", r.LogicalID))
					}
					out[a+" "+res+cond] = true
				}
			}
		}
	}
	return out, bad
}

func checkTrust(t *testing.T, raw rawTemplate, r *template.Resource) {
	t.Helper()
	doc, _ := raw.render(t, template.Lookup(r.Properties, "AssumeRolePolicyDocument")).(map[string]any)
	if r.LogicalID == "SandboxRole" {
		checkSandboxTrust(t, doc)
		return
	}
	sts := list(doc["Statement"])
	if len(sts) != 1 {
		t.Errorf("%s: want one trust statement, got %d", r.LogicalID, len(sts))
		return
	}
	st := sts[0].(map[string]any)
	principal, _ := st["Principal"].(map[string]any)
	services := asStrings(principal["Service"])
	sort.Strings(services)
	if want, ok := trust[r.LogicalID]; !ok || canonical(services) != canonical([]string{want}) || st["Action"] != "sts:AssumeRole" || st["Effect"] != "Allow" {
		t.Errorf("%s: trusts %v with %v; want only %s", r.LogicalID, principal, st["Action"], trust[r.LogicalID])
	}
	// Roles that AWS services assume on the stack's behalf name the account, against the
	// confused deputy — where the service documents that it sends aws:SourceAccount.
	// Not Lambda, whose function binds the role itself; not API Gateway's account role,
	// for which AWS documents no such key (a condition on a key never sent would make
	// the account setting, and the stack, fail).
	switch svc := trust[r.LogicalID]; {
	case svc == "lambda.amazonaws.com", svc == "apigateway.amazonaws.com":
		if st["Condition"] != nil && svc == "apigateway.amazonaws.com" {
			t.Errorf("%s: trust policy has a condition API Gateway is not documented to meet: %s", r.LogicalID, canonical(st["Condition"]))
		}
	case !strings.Contains(canonical(st["Condition"]), `"aws:SourceAccount":"${AWS::AccountId}"`):
		t.Errorf("%s: trust policy lacks an aws:SourceAccount condition", r.LogicalID)
	}
}

// The least-privilege rules must catch what they are for: a wildcard action, a "*"
// resource on an action that takes an ARN, and ListTasks on "*" without its condition.
func TestRoles_RulesCatchWildcards(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	var doc yaml.Node
	src := `
Policies:
  - PolicyName: bad
    PolicyDocument:
      Statement:
        - {Effect: Allow, Action: "dynamodb:*", Resource: !GetAtt Table.Arn}
        - {Effect: Allow, Action: "s3:GetObject", Resource: "*"}
        - {Effect: Allow, Action: "ecs:ListTasks", Resource: "*"}
        - {Effect: Allow, Action: "ecs:DescribeTasks", Resource: "*", Condition: {ArnEquals: {"ecs:cluster": !GetAtt Cluster.Arn}}}
`
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	_, bad := grants(t, raw, &template.Resource{LogicalID: "BadRole", Properties: doc.Content[0]})
	if len(bad) != 4 {
		t.Fatalf("want 4 violations, got %d:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// sandboxTrust is SandboxRole's whole trust policy: the vendor's role alone may assume
// it, and only tagging the session with a user id (the key of every grant above).
const sandboxTrust = `{"Statement":[{"Action":["sts:AssumeRole","sts:TagSession"],` +
	`"Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["userId"]},"StringLike":{"aws:RequestTag/userId":"user_?*"}},` +
	`"Effect":"Allow","Principal":{"AWS":"${VendRole.Arn}"}}],"Version":"2012-10-17"}`

func checkSandboxTrust(t *testing.T, doc map[string]any) {
	t.Helper()
	if got := canonical(doc); got != sandboxTrust {
		t.Errorf("SandboxRole trusts\n  %s\nwant\n  %s", got, sandboxTrust)
	}
}

// The backups area (backups/, internal/backup) is reached by the Cleanup function's
// backup step and the erase function's deletion of a user, and by no other role: no
// sandbox role, vendor or task role may list, read, write or delete it, so nothing a
// sandbox can obtain reaches a backup. (With R2 there is no IAM: the vendor's
// temporary credentials name users/<id>/ only, checked in internal/vend.)
func TestRoles_BackupsAreaOnlyCleanupAndErase(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			reached := map[string]bool{}
			for _, r := range raw.ofType(t, "AWS::IAM::Role") {
				if _, ok := managedAllowed[r.LogicalID]; ok {
					continue
				}
				got, _ := grants(t, raw, r)
				for g := range got {
					action, rest, _ := strings.Cut(g, " ")
					resource, _, _ := strings.Cut(rest, " ")
					if strings.HasPrefix(action, "s3:") && (strings.Contains(g, "backups/") || resource == bucket+"/*" || resource == "*") {
						reached[r.LogicalID] = true
						if r.LogicalID != "CleanupRole" && r.LogicalID != "EraseRole" {
							t.Errorf("%s reaches the backups area: %s", r.LogicalID, g)
						}
					}
				}
			}
			if sc.name == "s3" && (!reached["CleanupRole"] || !reached["EraseRole"]) {
				t.Errorf("the backups area is reached by %v; want CleanupRole and EraseRole", reached)
			}
		})
	}
}
