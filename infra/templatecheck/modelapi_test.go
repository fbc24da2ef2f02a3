package templatecheck_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/config"
)

const modelKeyArn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sandgate/model-api-key-AbCdEf"

// modelScenario deploys with a model API: its key a secret, a rate and a spend limit.
var modelScenario = scenario{name: "s3+model", params: with(required, map[string]string{
	"ModelApiUrl":          "https://api.anthropic.com",
	"ModelApiKeySecretArn": modelKeyArn,
	"ModelApiAuthHeader":   "x-api-key",
	"ModelApiRateLimit":    "30",
	"ModelApiSpendLimit":   "200000",
})}

// sandboxContainer renders the sandbox's one container under sc.
func sandboxContainer(t *testing.T, sc scenario) map[string]any {
	t.Helper()
	raw := loadRaw(t, templatePath, sc)
	td := raw.render(t, raw.Resources["SandboxTaskDefinition"].Properties).(map[string]any)
	return list(td["ContainerDefinitions"])[0].(map[string]any)
}

// The model API's key reaches the agent only as the container's Secret, read by ECS
// with the execution role, which is granted exactly that secret and nothing more; the
// container's Environment (which DescribeTaskDefinition shows) holds no key; what the
// task definition sets is what the agent's proxy reads and accepts. Without a model API
// there is neither Secret nor grant.
func TestModelAPI_KeyOnlyAsTheAgentsSecret(t *testing.T) {
	raw := loadRaw(t, templatePath, modelScenario)
	c := sandboxContainer(t, modelScenario)
	secrets := list(c["Secrets"])
	if len(secrets) != 1 {
		t.Fatalf("Secrets %v, want the model API's key alone", secrets)
	}
	s := secrets[0].(map[string]any)
	if s["Name"] != "UPSTREAM_MODEL_KEY" || s["ValueFrom"] != "${ModelApiKeySecretArn}" {
		t.Errorf("Secret %v, want UPSTREAM_MODEL_KEY from ModelApiKeySecretArn", s)
	}
	env := map[string]string{}
	for _, e := range list(c["Environment"]) {
		m := e.(map[string]any)
		name, _ := m["Name"].(string)
		v, _ := m["Value"].(string)
		env[name] = v
		if apiproxy.IsKeyVar(name) || secretLike.MatchString(name) || strings.Contains(v, "ModelApiKeySecretArn") {
			t.Errorf("the container's Environment holds %s=%s: a key belongs in Secrets", name, v)
		}
	}
	want := map[string]string{"UPSTREAMS": "model", "UPSTREAM_MODEL_URL": "${ModelApiUrl}", "UPSTREAM_MODEL_HEADER": "${ModelApiAuthHeader}",
		"UPSTREAM_MODEL_RATE": "${ModelApiRateLimit}", "UPSTREAM_MODEL_SPEND": "${ModelApiSpendLimit}", "UPSTREAM_MODEL_SPEND_WINDOW": "${ModelApiSpendWindow}"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}

	// The values as deployed: the agent's proxy accepts them.
	tpl, err := template.Load(templatePath, template.Options{Parameters: modelScenario.params, Resolver: newResolver(), TaskDefinitions: true, Roles: true})
	if err != nil {
		t.Fatal(err)
	}
	td := tpl.TaskDefinitions["SandboxTaskDefinition"]
	vars := map[string]string{}
	for k, v := range td.Containers[0].Environment {
		vars[k] = v
	}
	vars["UPSTREAM_MODEL_KEY"] = "a-key"
	e := config.New(config.Map(vars))
	ups := apiproxy.LoadUpstreams(e)
	if err := e.Err(); err != nil || len(ups) != 1 || ups[0].URL.String() != "https://api.anthropic.com" ||
		ups[0].Header != "X-Api-Key" || ups[0].RatePerMinute != 30 || ups[0].Spend != 200000 {
		t.Fatalf("the agent reads %v (%v)", ups, err)
	}
	if got := td.Containers[0].Secrets; len(got) != 1 || got["UPSTREAM_MODEL_KEY"] != modelKeyArn {
		t.Errorf("deployed Secrets %v", got)
	}

	// The execution role reads the one secret; the task role, which the workload's
	// process shares a network with, gets nothing new.
	for _, r := range raw.ofType(t, "AWS::IAM::Role") {
		got, _ := grants(t, raw, r)
		wantGrants := expectedGrants("s3")[r.LogicalID]
		if r.LogicalID == "TaskExecutionRole" {
			wantGrants = append(slices.Clone(wantGrants), "secretsmanager:GetSecretValue ${ModelApiKeySecretArn}")
		}
		if r.LogicalID == "ApiGatewayCloudWatchRole" {
			continue
		}
		if missing, extra := diff(set(wantGrants...), got); len(missing)+len(extra) > 0 {
			t.Errorf("%s with a model API:\n  missing: %s\n  extra:   %s", r.LogicalID, missing, extra)
		}
	}

	for _, sc := range scenarios {
		if c := sandboxContainer(t, sc); c["Secrets"] != nil {
			t.Errorf("%s: Secrets %v without a model API", sc.name, c["Secrets"])
		}
	}
}
