package templatecheck_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/disconnect"
	"github.com/sandgate/sandgate/internal/message"
	"github.com/sandgate/sandgate/internal/pool"
	"github.com/sandgate/sandgate/internal/prewarm"
	"github.com/sandgate/sandgate/internal/status"
	"github.com/sandgate/sandgate/internal/taskevents"
	"github.com/sandgate/sandgate/internal/vend"
	"github.com/sandgate/sandgate/internal/webhook"
)

// loader is a function's configuration loader, as its main calls it.
type loader struct {
	load func(*config.Env)
	// optional are variables the loader reads with a default, which template.yaml need
	// not set. Take them from the loader's package (an exported Optional list) so the
	// exemption lives next to the defaults it relies on.
	optional []string
}

// loaders is the registry of functions whose configuration loader exists. Add each
// function's LoadConfig when it lands: from then on, every variable it reads must be set
// by the template (or be optional) and every variable the template sets must be read.
var loaders = map[string]loader{
	"AuthorizeFunction":  {load: func(e *config.Env) { authorizer.LoadConfig(e) }, optional: authorizer.Optional},
	"ConnectFunction":    {load: func(e *config.Env) { connect.LoadConfig(e) }, optional: connect.Optional},
	"MessageFunction":    {load: func(e *config.Env) { message.LoadConfig(e) }, optional: message.Optional},
	"DisconnectFunction": {load: func(e *config.Env) { disconnect.LoadConfig(e) }, optional: disconnect.Optional},
	"StatusFunction":     {load: func(e *config.Env) { status.LoadConfig(e) }, optional: status.Optional},
	"PrewarmFunction":    {load: func(e *config.Env) { prewarm.LoadConfig(e) }, optional: prewarm.Optional},
	"CleanupFunction":    {load: func(e *config.Env) { cleanup.LoadConfig(e) }, optional: cleanup.Optional},
	"TaskEventsFunction": {load: func(e *config.Env) { taskevents.LoadConfig(e) }, optional: taskevents.Optional},
	"VendFunction":       {load: func(e *config.Env) { vend.LoadConfig(e) }, optional: vend.Optional},
	"RelayFunction":      {load: func(e *config.Env) { connrelay.LoadConfig(e) }, optional: connrelay.Optional},
	"PoolFunction":       {load: func(e *config.Env) { pool.LoadConfig(e) }, optional: pool.Optional},
	"WebhookFunction":    {load: func(e *config.Env) { webhook.LoadConfig(e) }, optional: webhook.Optional},
	"EraseFunction":      {load: func(e *config.Env) { webhook.LoadEraseConfig(e) }, optional: webhook.EraseOptional},
}

// sdkVariables are read by aws-sdk-go-v2's own configuration, not by a loader.
// AWS_ENDPOINT_URL is declared empty for `sam local invoke` (TestEnvironment_EndpointEmpty).
var sdkVariables = set("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

// globalsNotRead are Globals variables a function receives but has no use for.
var globalsNotRead = map[string]map[string]bool{}

// The environment contract the functions are written against, per scenario.
var (
	envGlobals = []string{"TABLE_NAME", "LOG_LEVEL", "AWS_ENDPOINT_URL"}
	envEnsure  = []string{"ECS_CLUSTER", "TASK_DEFINITION", "SANDBOX_CONTAINER", "SUBNET_IDS",
		"SECURITY_GROUP_IDS", "CAPACITY_PROVIDER", "MAX_SANDBOXES", "LEASE_TTL", "BUCKET", "MANAGEMENT_ENDPOINT",
		"POOL_SIZE", "POOL_MAX_AGE"}
	envStorage = map[string][]string{
		"s3": {"STORAGE_REGION", "STORAGE_PATH_STYLE"},
		"r2": {"STORAGE_REGION", "STORAGE_PATH_STYLE", "AWS_ENDPOINT_URL_S3", "STORAGE_CREDENTIALS_SECRET"},
	}
)

func contract(fn, scenario string) map[string]bool {
	names := append([]string{}, envGlobals...)
	switch fn {
	case "AuthorizeFunction", "StatusFunction":
		names = append(names, "SIGNING_SECRET_ID")
	case "ConnectFunction":
		names = append(names, envEnsure...)
		names = append(names, "MAX_CONNECTIONS_PER_USER", "CONNECTS_PER_MINUTE", "CONNECT_BURST")
		names = append(names, "POOL_FUNCTION") // a start asks for a refill
	case "MessageFunction":
		// Not the ensure set: it starts no task, it asks the Connect function to.
		names = append(names, "MANAGEMENT_ENDPOINT", "CONNECT_FUNCTION", "INBOX_MAX_FRAMES", "INBOX_MAX_BYTES", "AGENT_TIMEOUT",
			"MESSAGE_RATE_LIMIT", "RATE_LIMIT_CLOSE_AFTER")
	case "DisconnectFunction":
		// Only the globals: it removes a record and tells the agent; it never posts.
	case "PrewarmFunction":
		names = append(names, "SIGNING_SECRET_ID")
		names = append(names, envEnsure...)
		names = append(names, "POOL_FUNCTION")
	case "PoolFunction":
		// Where and how pool tasks run, the capacity they count against, the pool.
		names = append(names, envEnsure...)
	case "CleanupFunction":
		names = append(names, "ECS_CLUSTER", "BUCKET", "RETENTION_DAYS", "DRY_RUN", "MANAGEMENT_ENDPOINT")
		names = append(names, "BACKUP_KEEP", "BACKUP_MAX_AGE_DAYS") // the backup step's retention
		names = append(names, envStorage[scenario]...)
	case "TaskEventsFunction":
		// The cluster whose events it takes, and the stage whose clients it tells.
		names = append(names, "ECS_CLUSTER", "MANAGEMENT_ENDPOINT")
	case "VendFunction":
		names = append(names, "TASK_ROLE_ARN", "SANDBOX_ROLE_ARN", "ECS_CLUSTER", "AGENT_PORT")
		if scenario == "r2" {
			// It mints the sandboxes' R2 credentials from the parent key it alone reads.
			names = append(names, "STORAGE_CREDENTIALS_SECRET", "STORAGE_ENDPOINT", "BUCKET")
		}
	case "RelayFunction":
		names = append(names, "MANAGEMENT_ENDPOINT", "SANDBOX_ROLE_ARN", "ECS_CLUSTER")
	case "WebhookFunction":
		// The webhook's secret, by name, and the function that deletes the user.
		names = append(names, "WEBHOOK_SECRET_ID", "ERASE_FUNCTION")
	case "EraseFunction":
		// Cleanup's: the purge it shares, plus the stop and the connections' close.
		names = append(names, "ECS_CLUSTER", "BUCKET", "MANAGEMENT_ENDPOINT")
		names = append(names, envStorage[scenario]...)
	}
	return set(names...)
}

// The template sets exactly the variables of the environment contract, with values
// that agree with the rest of the template.
func TestEnvironment_Contract(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			tpl, _ := loadModel(t, sc)
			for _, id := range allFunctions {
				fn := tpl.Functions[id]
				if missing, extra := diff(contract(id, sc.name), set(fn.EnvironmentNames()...)); len(missing)+len(extra) > 0 {
					t.Errorf("%s: environment lacks %v, has unexpected %v", id, missing, extra)
				}
			}
			mgmt := "https://" + testAPIID + ".execute-api." + testRegion + ".amazonaws.com/prod"
			wantValues := map[string]string{
				"TABLE_NAME": testTable, "LOG_LEVEL": "INFO",
				"ECS_CLUSTER": testCluster, "TASK_DEFINITION": testTaskDef, "SANDBOX_CONTAINER": "agent",
				"SUBNET_IDS": "subnet-0a,subnet-0b", "SECURITY_GROUP_IDS": "sg-0a", "CAPACITY_PROVIDER": "FARGATE",
				"MAX_SANDBOXES": "50", "LEASE_TTL": "60", "BUCKET": "sandgate-test-bucket", "MANAGEMENT_ENDPOINT": mgmt,
				"CONNECT_FUNCTION": testStack + "-connect", "INBOX_MAX_FRAMES": "100", "INBOX_MAX_BYTES": "1048576", "AGENT_TIMEOUT": "2",
				"RETENTION_DAYS": "90", "DRY_RUN": "false", "STORAGE_PATH_STYLE": "false",
				"MAX_CONNECTIONS_PER_USER": "20", "CONNECTS_PER_MINUTE": "60", "CONNECT_BURST": "20",
				"MESSAGE_RATE_LIMIT": "20", "RATE_LIMIT_CLOSE_AFTER": "100",
			}
			if sc.name == "s3" {
				wantValues["STORAGE_REGION"] = testRegion // empty StorageRegion means the stack's
			} else {
				wantValues["STORAGE_REGION"] = "auto"
				wantValues["AWS_ENDPOINT_URL_S3"] = sc.params["StorageEndpoint"]
			}
			for _, fn := range tpl.Functions {
				for k, v := range fn.Environment {
					if want, ok := wantValues[k]; ok && v != want {
						t.Errorf("%s: %s = %q, want %q", fn.LogicalID, k, v, want)
					}
				}
			}
		})
	}
}

// secretNames are the only variables whose name says "secret": each names a Secrets
// Manager secret (its name or ARN), which the function reads at run time, and is set
// from the parameter that names it.
var secretNames = map[string]string{
	"SIGNING_SECRET_ID":          "SigningSecretName",
	"STORAGE_CREDENTIALS_SECRET": "StorageCredentialsSecretArn",
	"WEBHOOK_SECRET_ID":          "UserWebhookSecretName",
}

// defaultSecretNames are the secret-name parameters' defaults.
var defaultSecretNames = map[string]string{
	"SigningSecretName":     "sandgate/signing-secrets",
	"UserWebhookSecretName": "sandgate/clerk-webhook",
}

// secretLike is what a variable's name would say if it held a secret.
var secretLike = regexp.MustCompile(`(?i)secret|password|passwd|token|private|credential|(^|_)key($|_)|signing`)

// No secret is in any function's environment: nothing there comes from a dynamic
// reference (CloudFormation would write the value into the function's configuration,
// which lambda:GetFunctionConfiguration — part of ReadOnlyAccess — shows), no
// variable named like a secret holds anything but the name of one, and the template
// has no dynamic reference at all.
func TestEnvironment_NoSecrets(t *testing.T) {
	raw, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "{{resolve:") {
		t.Error("template.yaml holds a dynamic reference ({{resolve:…}}): its value would land in a resource's configuration")
	}
	seen := set()
	for _, sc := range scenarios {
		tpl, res := loadModel(t, sc)
		for _, fn := range tpl.Functions {
			for k, v := range fn.Environment {
				if ref, ok := res.dynamics[v]; ok {
					t.Errorf("%s/%s: %s comes from the dynamic reference {{%s}}", sc.name, fn.LogicalID, k, ref)
				}
				param, named := secretNames[k]
				switch {
				case named:
					seen[k] = true
					if want := sc.params[param]; want == "" && defaultSecretNames[param] != "" {
						if v != defaultSecretNames[param] {
							t.Errorf("%s/%s: %s = %q, want the default secret name", sc.name, fn.LogicalID, k, v)
						}
					} else if v != want {
						t.Errorf("%s/%s: %s = %q, want the %s parameter %q", sc.name, fn.LogicalID, k, v, param, want)
					}
				case secretLike.MatchString(k):
					t.Errorf("%s/%s: %s is named like a secret; only the names in secretNames may be, and they name one", sc.name, fn.LogicalID, k)
				}
			}
		}
	}
	for k := range secretNames {
		if !seen[k] {
			t.Errorf("no function receives %s in any scenario", k)
		}
	}
}

// Deployed, every function declares AWS_ENDPOINT_URL empty — which the SDKs ignore — so
// that a local env-vars file may set it (SAM CLI sets only declared variables); any value
// here would send a deployed function's AWS calls elsewhere.
func TestEnvironment_EndpointEmpty(t *testing.T) {
	for _, sc := range scenarios {
		tpl, _ := loadModel(t, sc)
		for id, fn := range tpl.Functions {
			v, ok := fn.Environment["AWS_ENDPOINT_URL"]
			if !ok {
				t.Errorf("%s/%s does not declare AWS_ENDPOINT_URL, so sam local invoke cannot point it at the local stack", sc.name, id)
			} else if v != "" {
				t.Errorf("%s/%s: AWS_ENDPOINT_URL = %q, want empty", sc.name, id, v)
			}
		}
	}
}

// Every variable a function's loader reads is set by the template (or is optional with a
// default), every variable the template sets is read, and the loader accepts the values.
func TestEnvironment_LoadersAgreeWithTemplate(t *testing.T) {
	if len(loaders) == 0 {
		t.Fatal("no loader registered")
	}
	for _, sc := range scenarios {
		tpl, _ := loadModel(t, sc)
		for id, l := range loaders {
			t.Run(sc.name+"/"+id, func(t *testing.T) {
				fn := tpl.Functions[id]
				if fn == nil {
					t.Fatalf("%s has a loader but is not in the template", id)
				}
				env := config.New(config.Map(fn.Environment))
				l.load(env)
				if err := env.Err(); err != nil {
					t.Errorf("the loader refuses the template's environment: %v", err)
				}
				read := set(env.Names()...)
				setByTemplate := set(fn.EnvironmentNames()...)
				optional := set(l.optional...)
				for name := range read {
					if !setByTemplate[name] && !optional[name] {
						t.Errorf("%s reads %s, which template.yaml does not set (and it is not in the loader's optional list)", id, name)
					}
				}
				for name := range setByTemplate {
					if !read[name] && !sdkVariables[name] && !globalsNotRead[id][name] {
						t.Errorf("template.yaml sets %s on %s, which its loader never reads", name, id)
					}
				}
				for name := range optional {
					if !read[name] {
						t.Errorf("%s lists %s as optional but never reads it", id, name)
					}
				}
			})
		}
	}
}

// The loader check above must notice a variable the template forgets.
func TestEnvironment_LoaderCheckNoticesMissingVariable(t *testing.T) {
	tpl, _ := loadModel(t, scenarios[0])
	envMap := map[string]string{}
	for k, v := range tpl.Functions["AuthorizeFunction"].Environment {
		if k != authorizer.EnvSigningSecretID {
			envMap[k] = v
		}
	}
	env := config.New(config.Map(envMap))
	loaders["AuthorizeFunction"].load(env)
	if env.Err() == nil {
		t.Fatal("the authorizer's loader accepted an environment without SIGNING_SECRET_ID")
	}
	read := set(env.Names()...)
	if !read[authorizer.EnvSigningSecretID] {
		t.Fatalf("config.Env did not record the read of %s: the loader check would be blind", authorizer.EnvSigningSecretID)
	}
}
