package templatecheck_test

import (
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// operatorParameters are the parameters an operator tunes or must set (with the
// S3-or-R2 storage choice), as docs/DEPLOY.md lists them.
var operatorParameters = []string{"MaxSandboxes", "SleepAfter", "MaxLifetime", "RetentionDays", "MessageRateLimit",
	"SandboxImage", "SubnetIds", "FunctionSecurityGroupIds", "SandboxSecurityGroupIds", "BucketName", "StorageEndpoint", "StageName"}

// secretish names a parameter that could carry a secret value.
var secretish = regexp.MustCompile(`(?i)secret|password|passwd|token|credential|private|apikey|accesskey`)

// Parameters have defaults where a sane one exists, are described, and carry no
// secret: a secret is named (…SecretName) or pointed at (…SecretArn), never passed, and
// NoEcho (a secret in the stack's parameters all the same) is not used at all.
func TestParameters(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	for _, name := range operatorParameters {
		if raw.Parameters[name] == nil {
			t.Errorf("parameter %s is missing", name)
		}
	}
	names := slices.Sorted(maps.Keys(raw.Parameters))
	for _, name := range names {
		p := raw.Parameters[name].Node
		if d := template.Lookup(p, "Description"); d == nil || len(d.Value) < 10 {
			t.Errorf("%s: no description", name)
		}
		_, isRequired := required[name]
		if hasDefault := template.Lookup(p, "Default") != nil; hasDefault == isRequired {
			t.Errorf("%s: default present = %v; only %v may lack one", name, hasDefault, slices.Sorted(maps.Keys(required)))
		}
		if n := template.Lookup(p, "NoEcho"); n != nil && n.Value == "true" {
			t.Errorf("%s: NoEcho parameter: put the secret in Secrets Manager and pass its name or ARN", name)
		}
		if secretish.MatchString(name) && !secretRef(name) {
			t.Errorf("%s looks like a secret value; pass a Secrets Manager name or ARN instead", name)
		}
	}
	// Every defaulted parameter must satisfy its own constraints: the local stack's
	// parser checks defaults as CloudFormation does.
	if _, err := template.Load(templatePath, template.Options{Parameters: required, Resolver: newResolver()}); err != nil {
		t.Fatal(err)
	}
	num := func(name string) int {
		n, err := strconv.Atoi(raw.value(t, name))
		if err != nil {
			t.Fatalf("%s default %q: %v", name, raw.value(t, name), err)
		}
		return n
	}
	if num("SleepAfter") >= num("MaxLifetime") {
		t.Errorf("SleepAfter %d must be shorter than MaxLifetime %d", num("SleepAfter"), num("MaxLifetime"))
	}
	if num("LeaseTtl") < 3*30 && num("LeaseTtl")/3 < 10 {
		t.Errorf("LeaseTtl %d leaves the agent under 10 s between renewals", num("LeaseTtl"))
	}
	// The secret parameters are used only as Secrets Manager references.
	for _, name := range names {
		if !secretRef(name) {
			continue
		}
		for _, r := range raw.Resources {
			checkSecretUse(t, r.LogicalID, name, r.Node)
		}
	}
}

// secretRef reports whether a parameter names a secret or points at one.
func secretRef(name string) bool {
	return strings.HasSuffix(name, "SecretName") || strings.HasSuffix(name, "SecretArn")
}

// secretUse matches an ECS secret valueFrom of, or an IAM resource naming (by name: the
// ARN's random suffix matched by ??????), the secret parameter. No dynamic reference:
// its value would land in the resource's configuration (TestEnvironment_NoSecrets).
var secretUse = regexp.MustCompile(`^\$\{(\w+)\}:\w+::$|^arn:\$\{AWS::Partition\}:secretsmanager:\$\{AWS::Region\}:\$\{AWS::AccountId\}:secret:\$\{(\w+)\}-\?\?\?\?\?\?$`)

// secretIDVariables are the function variables that may hold a secret's name or ARN,
// for a function that reads the secret itself with its role at run time (never its value).
var secretIDVariables = set(
	"VendFunction.Properties.Environment.Variables.STORAGE_CREDENTIALS_SECRET",
	"CleanupFunction.Properties.Environment.Variables.STORAGE_CREDENTIALS_SECRET",
	"AuthorizeFunction.Properties.Environment.Variables.SIGNING_SECRET_ID",
	"StatusFunction.Properties.Environment.Variables.SIGNING_SECRET_ID",
	"PrewarmFunction.Properties.Environment.Variables.SIGNING_SECRET_ID",
	"EraseFunction.Properties.Environment.Variables.STORAGE_CREDENTIALS_SECRET",
	"WebhookFunction.Properties.Environment.Variables.WEBHOOK_SECRET_ID",
)

// checkSecretUse fails where a parameter holding a secret's name or ARN is used as
// anything but a reference to the secret.
func checkSecretUse(t *testing.T, id, param string, root *yaml.Node) {
	t.Helper()
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n == nil {
			return
		}
		if name, arg, ok := template.Intrinsic(n); ok {
			switch name {
			case "Ref":
				// An IAM resource, a condition, a function variable that names the secret,
				// or an ECS container secret (ValueFrom: ECS reads it with the execution role).
				if arg.Value == param && !strings.HasSuffix(path, ".Resource") && !strings.HasSuffix(path, ".Condition") &&
					!strings.HasSuffix(path, ".ValueFrom") && !secretIDVariables[id+path] {
					t.Errorf("%s%s: !Ref %s outside an IAM resource", id, path, param)
				}
			case "Fn::Sub":
				if refersTo(n, param) {
					m := secretUse.FindStringSubmatch(arg.Value)
					if m == nil || m[1] != param && m[2] != param {
						t.Errorf("%s%s: %s used in %q, which is not a Secrets Manager reference", id, path, param, arg.Value)
					}
				}
				return
			}
			walk(arg, path)
			return
		}
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.MappingNode && i%2 == 1 {
				p = path + "." + n.Content[i-1].Value
			}
			walk(c, p)
		}
	}
	walk(root, "")
}

// The table is what internal/state expects: on demand, pk/sk, the Sandboxes index,
// TTL on expiresAt, with
// point-in-time recovery and encryption, and kept if the stack goes.
func TestTable(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	r := raw.Resources["Table"]
	p := raw.render(t, r.Properties).(map[string]any)
	want := map[string]any{
		"BillingMode": "PAY_PER_REQUEST",
		"AttributeDefinitions": []any{
			map[string]any{"AttributeName": "pk", "AttributeType": "S"},
			map[string]any{"AttributeName": "sk", "AttributeType": "S"},
			map[string]any{"AttributeName": "sandboxOf", "AttributeType": "S"},
		},
		"KeySchema": []any{
			map[string]any{"AttributeName": "pk", "KeyType": "HASH"},
			map[string]any{"AttributeName": "sk", "KeyType": "RANGE"},
		},
		// Cleanup's listing: sparse, and nothing a heartbeat renews projected.
		"GlobalSecondaryIndexes": []any{map[string]any{
			"IndexName": "Sandboxes",
			"KeySchema": []any{map[string]any{"AttributeName": "sandboxOf", "KeyType": "HASH"}},
			"Projection": map[string]any{"ProjectionType": "INCLUDE", "NonKeyAttributes": []any{
				"state", "leaseToken", "generation", "taskArn", "stateSince", "slot", "purgeStarted"}},
		}},
		"TimeToLiveSpecification":          map[string]any{"AttributeName": "expiresAt", "Enabled": "true"},
		"PointInTimeRecoverySpecification": map[string]any{"PointInTimeRecoveryEnabled": "true"},
		"SSESpecification":                 map[string]any{"SSEEnabled": "true"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Table properties:\n got %s\nwant %s", canonical(p), canonical(want))
	}
	if raw.str(t, template.Lookup(r.Node, "DeletionPolicy")) != "Retain" || raw.str(t, template.Lookup(r.Node, "UpdateReplacePolicy")) != "Retain" {
		t.Error("the table must be retained on delete and replacement: it holds every user's state")
	}
}

// The sandbox task definition matches what the launcher and the agent rely on.
func TestSandboxTaskDefinition(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			tpl, _ := loadModel(t, sc)
			defs := raw.ofType(t, "AWS::ECS::TaskDefinition")
			if len(defs) != 1 {
				t.Fatalf("want one task definition, got %d", len(defs))
			}
			td := raw.render(t, defs[0].Properties).(map[string]any)
			for k, v := range map[string]any{
				"RequiresCompatibilities": []any{"FARGATE"}, "NetworkMode": "awsvpc",
				"Cpu": "${SandboxCpu}", "Memory": "${SandboxMemory}",
				"RuntimePlatform":  map[string]any{"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
				"ExecutionRoleArn": "${TaskExecutionRole.Arn}", "TaskRoleArn": "${TaskRole.Arn}",
				"Family": "${AWS::StackName}-sandbox", // ensure roles may RunTask this family only
			} {
				if !reflect.DeepEqual(td[k], v) {
					t.Errorf("%s = %s, want %s", k, canonical(td[k]), canonical(v))
				}
			}
			cds := list(td["ContainerDefinitions"])
			if len(cds) != 1 {
				t.Fatalf("want one container, got %d", len(cds))
			}
			c := cds[0].(map[string]any)
			// The functions name the container in their RunTask overrides.
			for _, fn := range tpl.Functions {
				if name, ok := fn.Environment["SANDBOX_CONTAINER"]; ok && name != c["Name"] {
					t.Errorf("%s: SANDBOX_CONTAINER %q, but the container is %v", fn.LogicalID, name, c["Name"])
				}
			}
			if c["Image"] != "${SandboxImage}" || c["Essential"] != "true" || c["StopTimeout"] != "120" || c["ReadonlyRootFilesystem"] != "true" {
				t.Errorf("container: image %v, essential %v, stop timeout %v, read-only root %v", c["Image"], c["Essential"], c["StopTimeout"], c["ReadonlyRootFilesystem"])
			}
			env := map[string]string{}
			for _, e := range list(c["Environment"]) {
				kv := e.(map[string]any)
				env[kv["Name"].(string)] = kv["Value"].(string)
			}
			var secrets []string
			for _, s := range list(c["Secrets"]) {
				kv := s.(map[string]any)
				secrets = append(secrets, kv["Name"].(string))
				if !regexp.MustCompile(`^\$\{StorageCredentialsSecretArn\}:(accessKeyId|secretAccessKey)::$`).MatchString(kv["ValueFrom"].(string)) {
					t.Errorf("secret %v comes from %v, want a JSON key of StorageCredentialsSecretArn", kv["Name"], kv["ValueFrom"])
				}
			}
			wantEnv := set("AGENT_PORT", "DATA_DIR", "SLEEP_AFTER", "MAX_LIFETIME", "SYNC_INTERVAL", "LEASE_TTL",
				"MESSAGE_RATE_LIMIT", "LOG_LEVEL", "STORAGE_REGION", "STORAGE_PATH_STYLE", "VEND_URL", "RELAY_URL")
			// No storage key reaches a task: with R2 the vendor mints each one temporary
			// credentials for its user's prefix.
			wantSecrets := set()
			if sc.name == "r2" {
				wantEnv["AWS_ENDPOINT_URL_S3"], wantEnv["SANDBOX_COMMAND"] = true, true
			}
			if env["VEND_URL"] != "${VendFunctionUrl.FunctionUrl}" || env["RELAY_URL"] != "${RelayFunctionUrl.FunctionUrl}" {
				t.Errorf("VEND_URL %q, RELAY_URL %q: want the vendor's and the relay's function URLs", env["VEND_URL"], env["RELAY_URL"])
			}
			if missing, extra := diff(wantEnv, set(slices.Collect(maps.Keys(env))...)); len(missing)+len(extra) > 0 {
				t.Errorf("container environment lacks %v, has unexpected %v", missing, extra)
			}
			if missing, extra := diff(wantSecrets, set(secrets...)); len(missing)+len(extra) > 0 {
				t.Errorf("container secrets lack %v, have unexpected %v", missing, extra)
			}
			for _, v := range []string{taskenv.UserID, taskenv.LeaseToken, taskenv.Generation, taskenv.Table, taskenv.Bucket, taskenv.Prefix, taskenv.ManagementEndpoint} {
				if _, ok := env[v]; ok {
					t.Errorf("%s is per task: it comes from RunTask overrides, not the task definition", v)
				}
			}
			if env["LEASE_TTL"] != "${LeaseTtl}" || env["SLEEP_AFTER"] != "${SleepAfter}" || env["MAX_LIFETIME"] != "${MaxLifetime}" {
				t.Errorf("lease and lifetimes must come from the parameters the functions use too: %v", env)
			}
			if lease := tpl.Functions["ConnectFunction"].Environment["LEASE_TTL"]; lease != raw.value(t, "LeaseTtl") {
				t.Errorf("functions' LEASE_TTL %s differs from the LeaseTtl parameter %s the agent gets", lease, raw.value(t, "LeaseTtl"))
			}
			ports := list(c["PortMappings"])
			if len(ports) != 1 || ports[0].(map[string]any)["ContainerPort"] != env["AGENT_PORT"] {
				t.Errorf("port mappings %v, want exactly AGENT_PORT %s", ports, env["AGENT_PORT"])
			}
			// A read-only root works only if the agent's writable paths are volumes.
			vols := set()
			for _, v := range list(td["Volumes"]) {
				vm := v.(map[string]any)
				if len(vm) != 1 {
					t.Errorf("volume %v: want task ephemeral storage (a name, no host or EFS)", vm)
				}
				vols[vm["Name"].(string)] = true
			}
			mounts := map[string]string{}
			for _, m := range list(c["MountPoints"]) {
				mm := m.(map[string]any)
				mounts[mm["ContainerPath"].(string)] = mm["SourceVolume"].(string)
			}
			for _, p := range []string{env["DATA_DIR"], "/tmp"} {
				if !vols[mounts[p]] {
					t.Errorf("%s is not mounted from a task volume: the read-only root file system would refuse writes", p)
				}
			}
			hc, _ := c["HealthCheck"].(map[string]any)
			if cmd := asStrings(hc["Command"]); len(cmd) < 2 || cmd[0] != "CMD" && cmd[0] != "CMD-SHELL" {
				t.Errorf("health check %v", hc)
			}
			lc, _ := c["LogConfiguration"].(map[string]any)
			opts, _ := lc["Options"].(map[string]any)
			group := raw.Resources[strings.Trim(opts["awslogs-group"].(string), "${}")]
			if lc["LogDriver"] != "awslogs" || group == nil || template.Lookup(group.Properties, "RetentionInDays") == nil {
				t.Errorf("logs %v: want awslogs to a log group of the template with a retention", lc)
			}
		})
	}
}

// The cluster offers both Fargate capacity providers, and the functions pick one of them.
func TestCluster(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	cl := raw.render(t, raw.Resources["Cluster"].Properties).(map[string]any)
	providers := set(asStrings(cl["CapacityProviders"])...)
	if !reflect.DeepEqual(providers, set("FARGATE", "FARGATE_SPOT")) {
		t.Errorf("capacity providers %v", slices.Sorted(maps.Keys(providers)))
	}
	for _, v := range template.Lookup(raw.Parameters["CapacityProvider"].Node, "AllowedValues").Content {
		if !providers[v.Value] {
			t.Errorf("CapacityProvider allows %s, which the cluster lacks", v.Value)
		}
	}
}

// Outputs give a team what it needs after a deploy.
func TestOutputs(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	tpl, _ := loadModel(t, scenarios[0])
	out := map[string]string{}
	for k, v := range raw.Outputs {
		out[k] = raw.str(t, template.Lookup(v, "Value"))
	}
	for k, want := range map[string]string{
		"WebSocketURL":       "wss://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}",
		"ManagementEndpoint": "https://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}",
		"TableName":          "${Table}",
		"ClusterName":        "${Cluster}",
	} {
		if out[k] != want {
			t.Errorf("output %s = %q, want %q", k, out[k], want)
		}
	}
	mgmt := strings.NewReplacer("${WebSocketApi}", testAPIID, "${AWS::Region}", testRegion, "${StageName}", "prod").Replace(out["ManagementEndpoint"])
	if got := tpl.Functions["ConnectFunction"].Environment["MANAGEMENT_ENDPOINT"]; got != mgmt {
		t.Errorf("MANAGEMENT_ENDPOINT %q differs from the ManagementEndpoint output %q", got, mgmt)
	}
}

// The optional network stack gives the main stack what it needs: private subnets with a
// NAT route (the management API and R2 are reached over the internet), the agent port
// open within its security group, and no execute-api endpoint to capture the
// management API's name.
func TestNetworkStack(t *testing.T) {
	for _, natGateways := range []string{"1", "2"} {
		raw := loadRaw(t, networkTemplate, scenario{name: "nat" + natGateways, params: map[string]string{"NatGateways": natGateways, "InterfaceEndpoints": "true"}})
		for _, out := range []string{"SubnetIds", "FunctionSecurityGroupIds", "SandboxSecurityGroupIds"} {
			if raw.Outputs[out] == nil {
				t.Errorf("no output %s for the main stack's parameter of that name", out)
			}
		}
		privateTables := set()
		for _, a := range raw.ofType(t, "AWS::EC2::SubnetRouteTableAssociation") {
			p := raw.render(t, a.Properties).(map[string]any)
			if strings.HasPrefix(p["SubnetId"].(string), "${PrivateSubnet") {
				privateTables[p["RouteTableId"].(string)] = true
			}
		}
		if len(privateTables) != 2 {
			t.Errorf("private subnets use %d route tables, want one per subnet", len(privateTables))
		}
		for _, r := range raw.ofType(t, "AWS::EC2::Route") {
			p := raw.render(t, r.Properties).(map[string]any)
			if privateTables[p["RouteTableId"].(string)] && (p["DestinationCidrBlock"] != "0.0.0.0/0" || p["NatGatewayId"] == nil) {
				t.Errorf("%s: private default route %v does not go through a NAT gateway", r.LogicalID, p)
			}
			if privateTables[p["RouteTableId"].(string)] {
				delete(privateTables, p["RouteTableId"].(string))
			}
		}
		if len(privateTables) != 0 {
			t.Errorf("private route tables without a default route: %v", slices.Sorted(maps.Keys(privateTables)))
		}
		if n := len(raw.ofType(t, "AWS::EC2::NatGateway")); strconv.Itoa(n) != natGateways {
			t.Errorf("NatGateways=%s made %d NAT gateways", natGateways, n)
		}
		for _, e := range raw.ofType(t, "AWS::EC2::VPCEndpoint") {
			if strings.HasSuffix(raw.str(t, template.Lookup(e.Properties, "ServiceName")), ".execute-api") {
				t.Errorf("%s: an execute-api endpoint would capture the management API", e.LogicalID)
			}
		}
	}
}
