package templatecheck_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
)

// The repository root and the templates under test, relative to this package.
const (
	repoRoot        = "../.."
	templatePath    = repoRoot + "/template.yaml"
	networkTemplate = repoRoot + "/infra/network/template.yaml"
)

// scenario is one set of parameter values the template must be right under. The
// template's conditions (S3 or R2, a workload command or the demo) change what it
// grants and sets, so the checks run under each.
type scenario struct {
	name   string
	params map[string]string
}

// required are the parameters without a sane default: a deploy must name them.
var required = map[string]string{
	"SandboxImage":             "123456789012.dkr.ecr.us-east-1.amazonaws.com/sandgate-sandbox:test",
	"SubnetIds":                "subnet-0a,subnet-0b",
	"FunctionSecurityGroupIds": "sg-0f",
	"SandboxSecurityGroupIds":  "sg-0a",
	"BucketName":               "sandgate-test-bucket",
}

const r2SecretArn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sandgate/r2-AbCdEf"

var scenarios = []scenario{
	{name: "s3", params: required},
	{name: "r2", params: with(required, map[string]string{
		"StorageEndpoint":             "https://0123456789abcdef.r2.cloudflarestorage.com",
		"StorageRegion":               "auto",
		"StorageCredentialsSecretArn": r2SecretArn,
		"SandboxCommand":              "/usr/local/bin/my-gateway --port 9000",
		"SigningSecretName":           "sandgate/other-signing-secrets",
	})},
}

func with(base, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// Values the plausible resolver gives for what only a deployed stack knows.
const (
	testRegion    = "us-east-1"
	testAccount   = "123456789012"
	testStack     = "sandgate"
	testAPIID     = "a1b2c3d4e5"
	testTable     = "sandgate-Table-1ABCDEF"
	testCluster   = "sandgate-Cluster-1ABCDEF"
	testTaskDef   = "arn:aws:ecs:us-east-1:123456789012:task-definition/sandgate-sandbox:1"
	signingSecret = "test-signing-secret-0123456789abcdef-0123456789"
)

// plausibleResolver answers every reference with a value of the shape AWS would give,
// so that loaders validating their input accept what the template sets. It records the
// dynamic references it resolved, so a test can tell a secret that came from Secrets
// Manager from one written into the template.
type plausibleResolver struct {
	dynamics map[string]string // value → reference
}

func newResolver() *plausibleResolver {
	return &plausibleResolver{dynamics: map[string]string{}}
}

func (r *plausibleResolver) Ref(id string) (string, error) {
	switch id {
	case "AWS::Region":
		return testRegion, nil
	case "AWS::AccountId":
		return testAccount, nil
	case "AWS::StackName":
		return testStack, nil
	case "AWS::Partition":
		return "aws", nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	case "WebSocketApi", "HttpApi":
		return testAPIID, nil
	case "Table":
		return testTable, nil
	case "Cluster":
		return testCluster, nil
	case "SandboxTaskDefinition":
		return testTaskDef, nil
	}
	return "sandgate-" + id + "-1ABCDEF", nil
}

func (r *plausibleResolver) GetAtt(id, attr string) (string, error) {
	switch {
	case attr == "Arn" && strings.HasSuffix(id, "Role"):
		return fmt.Sprintf("arn:aws:iam::%s:role/%s-%s-1ABCDEF", testAccount, testStack, id), nil
	case attr == "FunctionUrl":
		return fmt.Sprintf("https://%s.lambda-url.%s.on.aws/", strings.ToLower(id), testRegion), nil
	}
	return fmt.Sprintf("arn:aws:test:%s:%s:%s/%s", testRegion, testAccount, id, attr), nil
}

func (r *plausibleResolver) Dynamic(ref string) (string, error) {
	var v string
	switch {
	case strings.HasSuffix(ref, ":accessKeyId"):
		v = "TESTACCESSKEYID0123"
	case strings.HasSuffix(ref, ":secretAccessKey"):
		v = "test-secret-access-key-0123456789abcdef"
	default:
		v = signingSecret
	}
	v += "#" + fmt.Sprint(len(r.dynamics)) // distinct per reference
	r.dynamics[v] = ref
	return v, nil
}

// loadModel parses template.yaml with the local stack's parser under sc.
func loadModel(t *testing.T, sc scenario) (*template.Template, *plausibleResolver) {
	t.Helper()
	res := newResolver()
	tpl, err := template.Load(templatePath, template.Options{Parameters: sc.params, Resolver: res})
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	return tpl, res
}

// rawTemplate is a template as written under one scenario, for the parts the local
// stack's model leaves out (roles, the task definition, alarms, permissions). Its
// methods fail the test where the template cannot be evaluated.
type rawTemplate struct{ *template.Document }

func loadRaw(t *testing.T, path string, sc scenario) rawTemplate {
	t.Helper()
	d, err := template.LoadDocument(path, template.Options{Parameters: sc.params, Resolver: newResolver()})
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	return rawTemplate{d}
}

// ofType returns the resources of type typ that exist under the scenario, sorted by id.
func (raw rawTemplate) ofType(t *testing.T, typ string) []*template.Resource {
	t.Helper()
	rs, err := raw.OfType(typ)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// render evaluates n symbolically (template.Document.EvalSymbolic): references read as
// the template writes them (!Ref X is "${X}", !GetAtt X.Arn is "${X.Arn}", a parameter
// is "${Name}"), while conditions, and so Fn::If, take the scenario's values. It
// returns a string, []any, map[string]any or nil.
func (raw rawTemplate) render(t *testing.T, n *yaml.Node) any {
	t.Helper()
	if n == nil {
		return nil
	}
	v, err := raw.EvalSymbolic(n, fmt.Sprintf("line %d", n.Line))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// str renders n, which must be a string.
func (raw rawTemplate) str(t *testing.T, n *yaml.Node) string {
	t.Helper()
	if n == nil {
		t.Fatal("want a string, found no property")
	}
	s, ok := raw.render(t, n).(string)
	if !ok {
		t.Fatalf("line %d: want a string", n.Line)
	}
	return s
}

// value is parameter name's value under the scenario.
func (raw rawTemplate) value(t *testing.T, name string) string {
	t.Helper()
	p := raw.Parameters[name]
	if p == nil || !p.HasValue {
		t.Fatalf("parameter %s has no value", name)
	}
	return p.Value
}

func list(v any) []any {
	switch v := v.(type) {
	case []any:
		return v
	case nil:
		return nil
	}
	return []any{v}
}

func asStrings(v any) []string {
	var out []string
	for _, e := range list(v) {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// refersTo reports whether n mentions id, a resource or parameter, through Ref,
// Fn::GetAtt or a Fn::Sub variable.
func refersTo(n *yaml.Node, id string) bool { return slices.Contains(template.Refs(n), id) }

// glob matches s against an IAM-style pattern where * matches any run of characters.
func glob(pattern, s string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(s)
}

func canonical(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

func set(items ...string) map[string]bool {
	m := map[string]bool{}
	for _, s := range items {
		m[s] = true
	}
	return m
}

// diff returns what want has and got lacks, and what got has and want lacks.
func diff(want, got map[string]bool) (missing, extra []string) {
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
