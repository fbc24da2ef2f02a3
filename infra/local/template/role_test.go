package template_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
)

// The template's roles come out with their documents resolved, and every function,
// the task definition and the schedule name a role the template defines.
func TestLoad_Roles_EveryPrincipalHasItsRole(t *testing.T) {
	tpl, err := template.Load("../../../template.yaml", template.Options{
		Resolver: localResolver(), Parameters: requiredParams(t, nil), TaskDefinitions: true, Roles: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tpl.Roles) == 0 {
		t.Fatal("no roles read")
	}
	roleOf := func(arn string) *template.Role {
		t.Helper()
		id := strings.TrimSuffix(strings.TrimPrefix(arn, "arn:"), ".Arn")
		r := tpl.Roles[id]
		if r == nil {
			t.Fatalf("%q names no role of the template", arn)
		}
		return r
	}
	for id, f := range tpl.Functions {
		r := roleOf(f.Role)
		if len(r.Policies) == 0 {
			t.Errorf("%s: role %s has no policy", id, r.LogicalID)
		}
		if f.LogGroup == "" {
			t.Errorf("%s: no log group", id)
		}
		for _, ev := range f.Events {
			if ev.Type == template.EventScheduleV2 {
				roleOf(ev.RoleArn)
			}
		}
	}
	td := tpl.TaskDefinitions["SandboxTaskDefinition"]
	if td == nil {
		t.Fatal("no sandbox task definition")
	}
	roleOf(td.ExecutionRole)
	roleOf(td.TaskRole)
	if td.Containers[0].LogGroup == "" {
		t.Error("the sandbox container names no log group")
	}
	for _, r := range tpl.Roles {
		var trust struct {
			Statement []struct {
				Principal map[string]any
				Action    any
			}
		}
		if err := json.Unmarshal(r.Trust, &trust); err != nil || len(trust.Statement) == 0 || trust.Statement[0].Principal == nil {
			t.Errorf("%s: trust policy %s (%v)", r.LogicalID, r.Trust, err)
		}
		for _, p := range r.Policies {
			var doc struct{ Statement []map[string]any }
			if err := json.Unmarshal(p.Document, &doc); err != nil || len(doc.Statement) == 0 {
				t.Errorf("%s/%s: %s (%v)", r.LogicalID, p.Name, p.Document, err)
			}
		}
	}
}

// Conditions drop statements through AWS::NoValue: with storage credentials in a
// secret (R2), the sandbox role has no bucket statement, no task reads the keys (the
// vendor mints each sandbox temporary ones) and the vendor's role reads the secret.
func TestLoad_Roles_ConditionalStatements(t *testing.T) {
	withKeys := requiredParams(t, map[string]string{"StorageCredentialsSecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:r2-AbCdEf"})
	tpl, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(), Parameters: withKeys, TaskDefinitions: true, Roles: true})
	if err != nil {
		t.Fatal(err)
	}
	if doc := string(tpl.Roles["SandboxRole"].Policies[0].Document); strings.Contains(doc, "s3:") {
		t.Errorf("sandbox role with storage keys still grants S3: %s", doc)
	}
	if s := tpl.TaskDefinitions["SandboxTaskDefinition"].Containers[0].Secrets; len(s) != 0 {
		t.Errorf("the storage keys reach the task: %v", s)
	}
	if doc := string(tpl.Roles["VendRole"].Policies[0].Document); !strings.Contains(doc, "secretsmanager:GetSecretValue") {
		t.Errorf("the vendor cannot read the storage keys: %s", doc)
	}
	plain, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(), Parameters: requiredParams(t, nil), TaskDefinitions: true, Roles: true})
	if err != nil {
		t.Fatal(err)
	}
	if doc := string(plain.Roles["SandboxRole"].Policies[0].Document); !strings.Contains(doc, "s3:GetObject") {
		t.Errorf("sandbox role without storage keys grants no S3: %s", doc)
	}
	if doc := string(plain.Roles["VendRole"].Policies[0].Document); strings.Contains(doc, "secretsmanager:") {
		t.Errorf("the vendor reads a secret it has no use for: %s", doc)
	}
}

// A role without a trust policy is refused with the path to it.
func TestParse_Roles_NoTrustPolicy(t *testing.T) {
	_, err := template.Parse([]byte("Resources:\n  R:\n    Type: AWS::IAM::Role\n    Properties:\n      Policies: []\n"), template.Options{Roles: true})
	var pe *template.PathError
	if !errors.Is(err, template.ErrInvalid) || !errors.As(err, &pe) || !strings.Contains(pe.Path, "AssumeRolePolicyDocument") {
		t.Fatalf("err = %v", err)
	}
}

// A function URL's auth type is read, and only the two Lambda knows are accepted.
func TestParse_FunctionURL_AuthType(t *testing.T) {
	doc := func(auth string) []byte {
		return []byte("Resources:\n  VendFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n      Handler: bootstrap\n      FunctionUrlConfig:\n        AuthType: " + auth + "\n")
	}
	tpl, err := template.Parse(doc("AWS_IAM"), template.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tpl.Functions["VendFunction"].URLAuthType; got != "AWS_IAM" {
		t.Fatalf("auth type = %q", got)
	}
	if _, err := template.Parse(doc("OPEN"), template.Options{}); !errors.Is(err, template.ErrInvalid) {
		t.Fatalf("unknown auth type: err = %v", err)
	}
}

// SAM generates <Function>Url for a function with a FunctionUrlConfig; a template may
// reference its FunctionUrl (a task's environment, say). A function without one has no
// such resource.
func TestParse_FunctionURL_GeneratedResource(t *testing.T) {
	src := []byte(`Resources:
  VendFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: bootstrap
      FunctionUrlConfig: {AuthType: AWS_IAM}
  UserFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: bootstrap
      Environment:
        Variables:
          VEND_URL: !GetAtt VendFunctionUrl.FunctionUrl
          SUBBED: !Sub "${VendFunctionUrl.FunctionUrl}credentials"
`)
	res := template.MapResolver{Attrs: map[string]string{"VendFunctionUrl.FunctionUrl": "https://abc.lambda-url.eu-west-1.on.aws/"}}
	tpl, err := template.Parse(src, template.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	env := tpl.Functions["UserFunction"].Environment
	if env["VEND_URL"] != "https://abc.lambda-url.eu-west-1.on.aws/" || env["SUBBED"] != "https://abc.lambda-url.eu-west-1.on.aws/credentials" {
		t.Fatalf("environment = %v", env)
	}
	noURL := []byte(strings.Replace(string(src), "      FunctionUrlConfig: {AuthType: AWS_IAM}\n", "", 1))
	if _, err := template.Parse(noURL, template.Options{Resolver: res}); !errors.Is(err, template.ErrUnknownReference) {
		t.Fatalf("a function without a URL: err = %v", err)
	}
}

// The HTTP API allows the origins of the AllowedOrigins parameter, and none when it is
// left empty.
func TestLoad_HTTPAPI_CORS(t *testing.T) {
	load := func(origins string) *template.Template {
		t.Helper()
		tpl, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(),
			Parameters: requiredParams(t, map[string]string{"AllowedOrigins": origins})})
		if err != nil {
			t.Fatal(err)
		}
		return tpl
	}
	c := load("https://app.example.com,https://admin.example.com").HTTPAPIs[0].CORS
	if c == nil || len(c.AllowOrigins) != 2 || c.AllowOrigins[1] != "https://admin.example.com" || strings.Join(c.AllowMethods, ",") != "GET,POST" || c.MaxAge != 600 {
		t.Fatalf("CORS = %+v", c)
	}
	if c := load("").HTTPAPIs[0].CORS; c != nil {
		t.Fatalf("CORS with no origin = %+v, want none", c)
	}
}
