package templatecheck_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	"SandboxImage":     "123456789012.dkr.ecr.us-east-1.amazonaws.com/sandgate-sandbox:test",
	"SubnetIds":        "subnet-0a,subnet-0b",
	"SecurityGroupIds": "sg-0a",
	"BucketName":       "sandgate-test-bucket",
}

const signingVersion = "0b9d1c7e-1234-4a5b-9c8d-0123456789ab"

const r2SecretArn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sandgate/r2-AbCdEf"

var scenarios = []scenario{
	{name: "s3", params: required},
	{name: "r2", params: with(required, map[string]string{
		"StorageEndpoint":             "https://0123456789abcdef.r2.cloudflarestorage.com",
		"StorageRegion":               "auto",
		"StorageCredentialsSecretArn": r2SecretArn,
		"SandboxCommand":              "/usr/local/bin/my-gateway --port 9000",
		"SigningSecretVersionId":      signingVersion,
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

// cfn is the raw template, for the parts the local stack's parser does not model
// (roles, the task definition, alarms, permissions).
type cfn struct {
	params    map[string]*yaml.Node
	paramList []string
	conds     map[string]*yaml.Node
	resources map[string]*resource
	outputs   map[string]*yaml.Node
	values    map[string]string // parameter values under the scenario
}

type resource struct {
	ID, Type, Condition string
	DependsOn           []string
	Props, Metadata     *yaml.Node
	Node                *yaml.Node
}

func loadRaw(t *testing.T, path string, sc scenario) *cfn {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	root := doc.Content[0]
	c := &cfn{params: map[string]*yaml.Node{}, conds: map[string]*yaml.Node{},
		resources: map[string]*resource{}, outputs: map[string]*yaml.Node{}, values: map[string]string{}}
	eachPair(get(root, "Parameters"), func(k string, v *yaml.Node) {
		c.params[k] = v
		c.paramList = append(c.paramList, k)
		if d := get(v, "Default"); d != nil {
			c.values[k] = d.Value
		}
	})
	for k, v := range sc.params {
		c.values[k] = v
	}
	eachPair(get(root, "Conditions"), func(k string, v *yaml.Node) { c.conds[k] = v })
	eachPair(get(root, "Outputs"), func(k string, v *yaml.Node) { c.outputs[k] = v })
	eachPair(get(root, "Resources"), func(k string, v *yaml.Node) {
		r := &resource{ID: k, Node: v, Props: get(v, "Properties"), Metadata: get(v, "Metadata")}
		if n := get(v, "Type"); n != nil {
			r.Type = n.Value
		}
		if n := get(v, "Condition"); n != nil {
			r.Condition = n.Value
		}
		if n := get(v, "DependsOn"); n != nil {
			if n.Kind == yaml.SequenceNode {
				for _, d := range n.Content {
					r.DependsOn = append(r.DependsOn, d.Value)
				}
			} else {
				r.DependsOn = []string{n.Value}
			}
		}
		c.resources[k] = r
	})
	return c
}

// ofType returns the resources of type typ that exist under the scenario, sorted by id.
func (c *cfn) ofType(t *testing.T, typ string) []*resource {
	var out []*resource
	for _, r := range c.resources {
		if r.Type == typ && (r.Condition == "" || c.cond(t, c.conds[r.Condition])) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func eachPair(m *yaml.Node, fn func(string, *yaml.Node)) {
	if m == nil {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		fn(m.Content[i].Value, m.Content[i+1])
	}
}

// noValue is what !Ref AWS::NoValue renders to: the enclosing entry disappears.
type noValueT struct{}

var noValue = noValueT{}

// intrinsic returns the long name and argument of an intrinsic call in short (!Sub) or
// long ({"Fn::Sub": ...}) form.
func intrinsic(n *yaml.Node) (string, *yaml.Node, bool) {
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		name := n.Tag[1:]
		if name != "Ref" && name != "Condition" {
			name = "Fn::" + name
		}
		c := *n
		c.Tag = ""
		switch c.Kind {
		case yaml.ScalarNode:
			c.Tag = "!!str"
		case yaml.SequenceNode:
			c.Tag = "!!seq"
		case yaml.MappingNode:
			c.Tag = "!!map"
		}
		return name, &c, true
	}
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 {
		k := n.Content[0].Value
		if k == "Ref" || strings.HasPrefix(k, "Fn::") {
			return k, n.Content[1], true
		}
	}
	return "", nil, false
}

// render evaluates n symbolically: references stay readable (!Ref X is "${X}", !GetAtt
// X.Arn is "${X.Arn}", !Sub keeps its ${...}), while Fn::If is decided with the
// scenario's parameter values. It returns a string, []any, map[string]any, nil or noValue.
func (c *cfn) render(t *testing.T, n *yaml.Node) any {
	t.Helper()
	if n == nil {
		return nil
	}
	if name, arg, ok := intrinsic(n); ok {
		switch name {
		case "Ref":
			if arg.Value == "AWS::NoValue" {
				return noValue
			}
			return "${" + arg.Value + "}"
		case "Fn::GetAtt":
			if arg.Kind == yaml.SequenceNode {
				return "${" + arg.Content[0].Value + "." + arg.Content[1].Value + "}"
			}
			return "${" + arg.Value + "}"
		case "Fn::Sub":
			if arg.Kind == yaml.ScalarNode {
				return arg.Value
			}
			s := arg.Content[0].Value
			eachPair(arg.Content[1], func(k string, v *yaml.Node) {
				s = strings.ReplaceAll(s, "${"+k+"}", fmt.Sprint(c.render(t, v)))
			})
			return s
		case "Fn::Join":
			parts, ok := c.render(t, arg.Content[1]).([]any)
			if !ok {
				return fmt.Sprintf("join(%q, %v)", arg.Content[0].Value, c.render(t, arg.Content[1]))
			}
			ss := make([]string, len(parts))
			for i, p := range parts {
				ss[i] = fmt.Sprint(p)
			}
			return strings.Join(ss, arg.Content[0].Value)
		case "Fn::If":
			if c.cond(t, c.conds[arg.Content[0].Value]) {
				return c.render(t, arg.Content[1])
			}
			return c.render(t, arg.Content[2])
		}
		t.Fatalf("render: unsupported intrinsic %s at line %d", name, n.Line)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		return n.Value
	case yaml.SequenceNode:
		out := []any{}
		for _, e := range n.Content {
			if v := c.render(t, e); v != noValue {
				out = append(out, v)
			}
		}
		return out
	case yaml.MappingNode:
		out := map[string]any{}
		eachPair(n, func(k string, v *yaml.Node) {
			if r := c.render(t, v); r != noValue {
				out[k] = r
			}
		})
		return out
	case yaml.AliasNode:
		return c.render(t, n.Alias)
	}
	t.Fatalf("render: unexpected node at line %d", n.Line)
	return nil
}

// value evaluates n to a concrete string for conditions: parameters take their values.
func (c *cfn) value(t *testing.T, n *yaml.Node) string {
	t.Helper()
	if name, arg, ok := intrinsic(n); ok {
		if name == "Ref" {
			v, ok := c.values[arg.Value]
			if !ok {
				t.Fatalf("condition refers to %s, which has no value", arg.Value)
			}
			return v
		}
		t.Fatalf("condition uses %s; only Ref is supported", name)
	}
	return n.Value
}

func (c *cfn) cond(t *testing.T, n *yaml.Node) bool {
	t.Helper()
	if n == nil {
		t.Fatal("undeclared condition")
	}
	name, arg, ok := intrinsic(n)
	if !ok && n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[0].Value == "Condition" {
		name, arg, ok = "Condition", n.Content[1], true
	}
	if !ok {
		t.Fatalf("line %d: not a condition", n.Line)
	}
	switch name {
	case "Condition":
		return c.cond(t, c.conds[arg.Value])
	case "Fn::Equals":
		return c.value(t, arg.Content[0]) == c.value(t, arg.Content[1])
	case "Fn::Not":
		return !c.cond(t, arg.Content[0])
	case "Fn::And", "Fn::Or":
		and := name == "Fn::And"
		for _, e := range arg.Content {
			if c.cond(t, e) != and {
				return !and
			}
		}
		return and
	}
	t.Fatalf("line %d: unsupported condition function %s", n.Line, name)
	return false
}

func (c *cfn) str(t *testing.T, n *yaml.Node) string {
	t.Helper()
	s, ok := c.render(t, n).(string)
	if !ok {
		t.Fatalf("line %d: want a string", n.Line)
	}
	return s
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

// refersTo reports whether n mentions logical id (or parameter) id through Ref, GetAtt
// or a Sub variable.
func refersTo(n *yaml.Node, id string) bool {
	if n == nil {
		return false
	}
	if name, arg, ok := intrinsic(n); ok {
		switch name {
		case "Ref":
			return arg.Value == id
		case "Fn::GetAtt":
			if arg.Kind == yaml.SequenceNode {
				return arg.Content[0].Value == id
			}
			return strings.HasPrefix(arg.Value, id+".")
		case "Fn::Sub":
			s := arg
			if arg.Kind == yaml.SequenceNode {
				s = arg.Content[0]
				if refersTo(arg.Content[1], id) {
					return true
				}
			}
			return regexp.MustCompile(`\$\{` + regexp.QuoteMeta(id) + `(\.[A-Za-z]+)?\}`).MatchString(s.Value)
		}
		return refersTo(arg, id)
	}
	for _, e := range n.Content {
		if refersTo(e, id) {
			return true
		}
	}
	return false
}

// glob matches s against an IAM-style pattern where * matches any run of characters.
func glob(pattern, s string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(s)
}

func canonical(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

func sorted[K comparable](m map[K]bool, less func(a, b K) bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

func set(items ...string) map[string]bool {
	m := map[string]bool{}
	for _, s := range items {
		m[s] = true
	}
	return m
}

func keys(m map[string]bool) []string {
	return sorted(m, func(a, b string) bool { return a < b })
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
