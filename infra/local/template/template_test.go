package template_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
)

const secretRef = "resolve:secretsmanager:sandgate/signing-secrets:SecretString"

// stackResolver answers like a deployed stack would, for whatever the template refers
// to: resources by a physical name, attributes by an ARN.
type stackResolver struct{}

func (stackResolver) Ref(id string) (string, error) {
	if id == "Table" {
		return "sandgate-table", nil
	}
	return "phys-" + id, nil
}
func (stackResolver) GetAtt(id, attr string) (string, error) { return "arn:" + id + "." + attr, nil }
func (stackResolver) Dynamic(ref string) (string, error) {
	if ref == secretRef {
		return "dev-secret", nil
	}
	return "dyn:" + ref, nil
}

func localResolver() template.Resolver { return stackResolver{} }

// requiredParams gives a value to every parameter of the repository template that has
// no Default (a deploy must pass those), chosen to satisfy its constraints.
func requiredParams(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Parameters map[string]struct {
			Type          string   `yaml:"Type"`
			Default       any      `yaml:"Default"`
			MinValue      *float64 `yaml:"MinValue"`
			AllowedValues []string `yaml:"AllowedValues"`
		} `yaml:"Parameters"`
	}
	// Decode only Parameters; the rest holds CloudFormation tags.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(root.Content[0].Content); i += 2 {
		if root.Content[0].Content[i].Value == "Parameters" {
			var m yaml.Node
			m.Kind, m.Content = yaml.MappingNode, root.Content[0].Content[i:i+2]
			if err := m.Decode(&doc); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := map[string]string{}
	for name, p := range doc.Parameters {
		if p.Default != nil {
			continue
		}
		switch {
		case len(p.AllowedValues) > 0:
			out[name] = p.AllowedValues[0]
		case p.Type == "Number" && p.MinValue != nil:
			out[name] = strconv.FormatFloat(*p.MinValue, 'f', -1, 64)
		case p.Type == "Number":
			out[name] = "1"
		case strings.HasPrefix(p.Type, "List<") || p.Type == "CommaDelimitedList":
			out[name] = "a,b"
		default:
			out[name] = "local" + strings.ToLower(name)
		}
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// The repository's template is the source of truth: it must always parse into the
// model the local stack runs.
func TestLoad_RepositoryTemplate(t *testing.T) {
	tpl, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(), Parameters: requiredParams(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	auth := tpl.Functions["AuthorizeFunction"]
	if auth == nil {
		t.Fatalf("no AuthorizeFunction among %v", keys(tpl.Functions))
	}
	want := map[string]string{"TABLE_NAME": "sandgate-table", "LOG_LEVEL": "INFO", "AWS_ENDPOINT_URL": "", "SIGNING_SECRET_ID": "sandgate/signing-secrets"}
	if !reflect.DeepEqual(auth.Environment, want) {
		t.Errorf("AuthorizeFunction environment = %v, want %v (Globals merged, references resolved)", auth.Environment, want)
	}
	// ReservedConcurrentExecutions behind its condition: absent by default.
	if auth.ReservedConcurrency != 0 {
		t.Errorf("AuthorizeFunction reserves %d by default", auth.ReservedConcurrency)
	}
	reserved, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(),
		Parameters: requiredParams(t, map[string]string{"AuthorizeReservedConcurrency": "50"})})
	if err != nil || reserved.Functions["AuthorizeFunction"].ReservedConcurrency != 50 {
		t.Errorf("AuthorizeReservedConcurrency=50: %v", err)
	}
	if auth.Timeout != 5*time.Second || auth.MemorySize != 128 || auth.Dir != "functions/authorize" ||
		auth.Handler != "bootstrap" || auth.LogFormat != "JSON" || auth.Architecture != "arm64" {
		t.Errorf("AuthorizeFunction = %+v", auth)
	}
	if c := tpl.Functions["ConnectFunction"]; c == nil || c.MemorySize != 256 || c.Timeout != 10*time.Second {
		t.Errorf("ConnectFunction does not take MemorySize from Globals: %+v", c)
	}
	if m := tpl.Functions["MessageFunction"]; m == nil || m.Environment["INBOX_MAX_FRAMES"] != "100" || m.Environment["TABLE_NAME"] != "sandgate-table" {
		t.Errorf("MessageFunction environment = %v", m.Environment)
	}
	cl := tpl.Functions["CleanupFunction"]
	if cl == nil || len(cl.Events) != 1 || cl.Events[0].Schedule != "rate(5 minutes)" || !cl.Events[0].Enabled {
		t.Errorf("CleanupFunction events = %+v", cl.Events)
	}

	if len(tpl.WebSocketAPIs) != 1 {
		t.Fatalf("WebSocket APIs = %d", len(tpl.WebSocketAPIs))
	}
	ws := tpl.WebSocketAPIs[0]
	if ws.RouteSelectionExpression != "$request.body.action" || ws.Stage != "prod" {
		t.Errorf("WebSocket API = %+v", ws)
	}
	for key, fn := range map[string]string{"$connect": "ConnectFunction", "$default": "MessageFunction", "$disconnect": "DisconnectFunction"} {
		r := ws.Routes[key]
		if r == nil || r.Function != fn || r.IntegrationType != "AWS_PROXY" {
			t.Errorf("route %s = %+v, want function %s", key, r, fn)
		}
	}
	a := ws.Routes["$connect"].Authorizer
	if a == nil || a.Function != "AuthorizeFunction" || a.Type != "REQUEST" ||
		!reflect.DeepEqual(a.IdentitySource, []string{"route.request.querystring.userId", "route.request.querystring.exp", "route.request.querystring.sig"}) {
		t.Errorf("authorizer = %+v", a)
	}
	if ws.Routes["$default"].Authorizer != nil {
		t.Error("$default route has an authorizer")
	}

	if len(tpl.HTTPAPIs) != 1 || tpl.HTTPAPIs[0].Stage != "prod" {
		t.Fatalf("HTTP APIs = %+v", tpl.HTTPAPIs)
	}
	keys := map[string]string{}
	for _, r := range tpl.HTTPAPIs[0].Routes {
		keys[r.Key()] = r.Function
	}
	if !reflect.DeepEqual(keys, map[string]string{"GET /status": "StatusFunction", "POST /prewarm": "PrewarmFunction", "POST /webhooks/clerk": "WebhookFunction"}) {
		t.Errorf("HTTP routes = %v", keys)
	}
}

func TestLoad_ParameterOverrides(t *testing.T) {
	tpl, err := template.Load("../../../template.yaml", template.Options{
		Resolver:   localResolver(),
		Parameters: requiredParams(t, map[string]string{"StageName": "local", "MaxSandboxes": "7"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if tpl.WebSocketAPIs[0].Stage != "local" || tpl.HTTPAPIs[0].Stage != "local" {
		t.Errorf("stage override not applied")
	}
	if got := tpl.Functions["ConnectFunction"].Environment["MAX_SANDBOXES"]; got != "7" {
		t.Errorf("MAX_SANDBOXES = %q", got)
	}
	if c := tpl.Functions["ConnectFunction"]; c.FunctionName != "phys-AWS::StackName-connect" || c.AsyncRetries == nil || *c.AsyncRetries != 0 {
		t.Errorf("ConnectFunction's FunctionName = %q, async retries %v", c.FunctionName, c.AsyncRetries)
	}
	if m := tpl.Functions["MessageFunction"]; m.AsyncRetries != nil {
		t.Errorf("MessageFunction's async retries = %v, want unset", *m.AsyncRetries)
	}
	for name, tc := range map[string]struct {
		params map[string]string
		path   string
	}{
		"pattern":    {map[string]string{"StageName": "no/slashes"}, "Parameters.StageName"},
		"min value":  {map[string]string{"MaxSandboxes": "0"}, "Parameters.MaxSandboxes"},
		"not number": {map[string]string{"MaxSandboxes": "many"}, "Parameters.MaxSandboxes"},
		"allowed":    {map[string]string{"SandboxCpu": "300"}, "Parameters.SandboxCpu"},
		"undeclared": {map[string]string{"NoSuch": "x"}, "Parameters.NoSuch"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := template.Load("../../../template.yaml", template.Options{Resolver: localResolver(), Parameters: requiredParams(t, tc.params)})
			var pe *template.PathError
			if !errors.Is(err, template.ErrParameter) || !errors.As(err, &pe) || pe.Path != tc.path {
				t.Fatalf("err = %v, want ErrParameter at %s", err, tc.path)
			}
		})
	}
}

func TestLoad_UnresolvedNamesPath(t *testing.T) {
	_, err := template.Load("../../../template.yaml", template.Options{Functions: []string{"AuthorizeFunction"}})
	var pe *template.PathError
	if !errors.Is(err, template.ErrUnresolved) || !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a PathError wrapping ErrUnresolved", err)
	}
	if !strings.HasPrefix(pe.Path, "Resources.AuthorizeFunction.Properties.Environment.Variables.") {
		t.Errorf("path = %q", pe.Path)
	}
	if !strings.Contains(err.Error(), "Table") {
		t.Errorf("error does not name the reference: %v", err)
	}
	// Limited to one function, only its references must resolve.
	one, err := template.Load("../../../template.yaml", template.Options{Functions: []string{"AuthorizeFunction"}, Resolver: localResolver()})
	if err != nil || len(one.Functions) != 1 || one.Functions["AuthorizeFunction"] == nil {
		t.Fatalf("Functions filter: %v", err)
	}
	if _, err := template.Load("../../../template.yaml", template.Options{Functions: []string{"NoSuchFunction"}}); !errors.Is(err, template.ErrUnknownReference) {
		t.Fatalf("unknown function in filter: %v", err)
	}
}

const intrinsics = `
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  NoDefault: {Type: String}
Mappings:
  Sizes:
    dev: {Memory: 512}
    prod: {Memory: 2048}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
  Both: !And [!Condition IsDev, {"Fn::Equals": [a, a]}]
  Either: !Or [!Condition IsProd, !Condition Both]
Globals:
  Function:
    Timeout: 9
    MemorySize: 64
    Layers: [global]
    Environment:
      Variables:
        SHARED: from-globals
        OVERRIDDEN: from-globals
Resources:
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties: {Whatever: !ImportValue never-evaluated}
  ProdOnlyFunction:
    Type: AWS::Serverless::Function
    Condition: IsProd
    Properties: {Timeout: !Ref NoDefault}
  Queue:
    Type: AWS::SQS::Queue
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: !FindInMap [Sizes, !Ref Env, Memory]
      Environment:
        Variables:
          OVERRIDDEN: mine
          SUB: !Sub "${AWS::Region}/${Queue}/${Queue.Arn}/${!Literal}"
          SUB_VARS: !Sub ["x-${Name}", {Name: !Select [1, !Ref Names]}]
          JOINED: !Join ["+", !Split [",", "p,q"]]
          LONG: {"Fn::Join": ["-", [{"Ref": "Env"}, {"Fn::GetAtt": [Queue, Url]}]]}
          CHOSEN: !If [Either, yes, no]
          DROPPED: !If [IsProd, kept, !Ref AWS::NoValue]
          B64: !Base64 hi
          NUMBER: 42
      Events:
        Hourly:
          Type: Schedule
          Properties: {Schedule: rate(1 hour), Enabled: false}
        Queue:
          Type: SQS
          Properties: {Queue: !GetAtt Queue.Arn}
        Any:
          Type: HttpApi
`

func TestParse_Intrinsics(t *testing.T) {
	res := template.MapResolver{
		Refs:  map[string]string{"AWS::Region": "eu-west-1", "Queue": "q-name"},
		Attrs: map[string]string{"Queue.Arn": "arn:q", "Queue.Url": "http://q"},
	}
	tpl, err := template.Parse([]byte(intrinsics), template.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tpl.Functions["ProdOnlyFunction"]; ok {
		t.Error("function excluded by its condition is present")
	}
	w := tpl.Functions["WorkerFunction"]
	want := map[string]string{
		"SHARED":     "from-globals",
		"OVERRIDDEN": "mine",
		"SUB":        "eu-west-1/q-name/arn:q/${Literal}",
		"SUB_VARS":   "x-b",
		"JOINED":     "p+q",
		"LONG":       "dev-http://q",
		"CHOSEN":     "yes",
		"B64":        "aGk=",
		"NUMBER":     "42",
	}
	if !reflect.DeepEqual(w.Environment, want) {
		t.Errorf("environment:\n got %v\nwant %v", w.Environment, want)
	}
	if w.MemorySize != 512 || w.Timeout != 9*time.Second || w.Name != "worker" {
		t.Errorf("function = %+v", w)
	}
	if len(w.Events) != 2 || w.Events[0].Enabled || w.Events[0].Schedule != "rate(1 hour)" {
		t.Errorf("events = %+v", w.Events)
	}
	if len(tpl.HTTPAPIs) != 1 || tpl.HTTPAPIs[0].LogicalID != "ServerlessHttpApi" || tpl.HTTPAPIs[0].Stage != "$default" ||
		tpl.HTTPAPIs[0].Routes[0].Key() != "$default" {
		t.Errorf("implicit HTTP API = %+v", tpl.HTTPAPIs)
	}

	prod, err := template.Parse([]byte(intrinsics), template.Options{Resolver: res, Parameters: map[string]string{"Env": "prod", "NoDefault": "4"}})
	if err != nil {
		t.Fatal(err)
	}
	if prod.Functions["ProdOnlyFunction"] == nil || prod.Functions["ProdOnlyFunction"].Timeout != 4*time.Second {
		t.Errorf("ProdOnlyFunction = %+v", prod.Functions["ProdOnlyFunction"])
	}
	if got := prod.Functions["WorkerFunction"].Environment; got["DROPPED"] != "kept" || got["CHOSEN"] != "yes" || prod.Functions["WorkerFunction"].MemorySize != 2048 {
		t.Errorf("prod environment = %v", got)
	}
}

func TestParse_BadInput(t *testing.T) {
	fn := func(props string) string {
		return "Resources:\n  AFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n" + props
	}
	for name, tc := range map[string]struct {
		src  string
		err  error
		path string
	}{
		"not yaml":          {"Resources: [", template.ErrInvalid, ""},
		"no resources":      {"Parameters: {}", template.ErrInvalid, ""},
		"list top":          {"- a", template.ErrInvalid, ""},
		"bad timeout":       {fn("      Timeout: soon"), template.ErrInvalid, "Resources.AFunction.Properties.Timeout"},
		"zero memory":       {fn("      MemorySize: 0"), template.ErrInvalid, "Resources.AFunction.Properties.MemorySize"},
		"unknown ref":       {fn("      Environment: {Variables: {X: !Ref Nope}}"), template.ErrUnknownReference, "Resources.AFunction.Properties.Environment.Variables.X"},
		"unknown getatt":    {fn("      Environment: {Variables: {X: !GetAtt Nope.Arn}}"), template.ErrUnknownReference, "Resources.AFunction.Properties.Environment.Variables.X"},
		"unsupported":       {fn("      Environment: {Variables: {X: !ImportValue other}}"), template.ErrUnsupported, "Resources.AFunction.Properties.Environment.Variables.X"},
		"no default":        {"Parameters: {P: {Type: String}}\n" + fn("      Environment: {Variables: {X: !Ref P}}"), template.ErrParameter, "Resources.AFunction.Properties.Environment.Variables.X"},
		"list as value":     {fn("      Environment: {Variables: {X: [a]}}"), template.ErrInvalid, "Resources.AFunction.Properties.Environment.Variables.X"},
		"bad select":        {fn("      Environment: {Variables: {X: !Select [5, [a]]}}"), template.ErrInvalid, "Resources.AFunction.Properties.Environment.Variables.X"},
		"unknown cond":      {fn("      Environment: {Variables: {X: !If [Nope, a, b]}}"), template.ErrUnknownReference, "Resources.AFunction.Properties.Environment.Variables.X"},
		"cycle":             {"Conditions: {A: !Condition A}\n" + fn("      Environment: {Variables: {X: !If [A, a, b]}}"), template.ErrInvalid, "Conditions.A"},
		"unterminated sub":  {fn("      Environment: {Variables: {X: !Sub 'a${b'}}"), template.ErrInvalid, "Resources.AFunction.Properties.Environment.Variables.X"},
		"unresolved secret": {fn("      Environment: {Variables: {X: '{{resolve:ssm:/p}}'}}"), template.ErrUnresolved, "Resources.AFunction.Properties.Environment.Variables.X"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := template.Parse([]byte(tc.src), template.Options{})
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			var pe *template.PathError
			if tc.path != "" && (!errors.As(err, &pe) || pe.Path != tc.path) {
				t.Fatalf("err = %v, want path %s", err, tc.path)
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The sandbox's task definition is read as the local stack runs it: the container's
// environment, port, stop timeout and mounts, with references resolved.
func TestLoad_RepositoryTaskDefinition(t *testing.T) {
	tpl, err := template.Load("../../../template.yaml", template.Options{
		Resolver: localResolver(), Parameters: requiredParams(t, nil), TaskDefinitions: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	td := tpl.TaskDefinitions["SandboxTaskDefinition"]
	if td == nil || len(td.Containers) != 1 {
		t.Fatalf("task definitions = %v", tpl.TaskDefinitions)
	}
	if td.Family != "phys-AWS::StackName-sandbox" || td.Cpu == 0 || td.Memory == 0 {
		t.Errorf("task definition = %+v", td)
	}
	c := td.Containers[0]
	if c.Name != "agent" || !reflect.DeepEqual(c.Ports, []int{8080}) || c.StopTimeout != 120*time.Second {
		t.Errorf("container = %+v", c)
	}
	if c.Environment["AGENT_PORT"] != "8080" || c.Environment["DATA_DIR"] == "" {
		t.Errorf("container environment = %v", c.Environment)
	}
	if _, ok := c.Environment["SANDBOX_COMMAND"]; ok {
		t.Errorf("SANDBOX_COMMAND set although the parameter is empty (its !If must drop it)")
	}
	// Root only to start the workload under its own uid, with every default capability
	// but the agent's five dropped (templatecheck checks the list; the stack applies it).
	if c.User != "0" || len(c.AddCapabilities) != 0 || !slices.Contains(c.DropCapabilities, "NET_RAW") || slices.Contains(c.DropCapabilities, "KILL") {
		t.Errorf("container user %q, capabilities added %q, dropped %q", c.User, c.AddCapabilities, c.DropCapabilities)
	}
	if c.Mounts[c.Environment["DATA_DIR"]] == "" {
		t.Errorf("DATA_DIR %q is not a mount point: %v", c.Environment["DATA_DIR"], c.Mounts)
	}
	// Without the option, task definitions are not read (nor their references resolved).
	tpl, err = template.Load("../../../template.yaml", template.Options{Resolver: localResolver(), Parameters: requiredParams(t, nil)})
	if err != nil || tpl.TaskDefinitions != nil {
		t.Fatalf("task definitions read without the option: %v, %v", tpl.TaskDefinitions, err)
	}
}

// A container's User and its LinuxParameters' capabilities are read as the template
// gives them, intrinsics resolved; a capability list that is not a list of strings is
// refused with its path.
func TestLoad_TaskDefinitionUserAndCapabilities(t *testing.T) {
	const doc = `
Parameters:
  Uid: {Type: String, Default: "1000:1000"}
  Trace: {Type: String, Default: "no"}
Conditions:
  Traced: !Equals [!Ref Trace, "yes"]
Resources:
  Def:
    Type: AWS::ECS::TaskDefinition
    Properties:
      Family: fam
      ContainerDefinitions:
        - Name: main
          User: !Ref Uid
          LinuxParameters:
            Capabilities:
              Add: !If [Traced, [SYS_PTRACE], []]
              Drop: [NET_RAW, !Sub "SYS_${Trace}"]
        - Name: plain
`
	path := filepath.Join(t.TempDir(), "template.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, trace := range []string{"no", "yes"} {
		tpl, err := template.Load(path, template.Options{TaskDefinitions: true, Parameters: map[string]string{"Trace": trace}})
		if err != nil {
			t.Fatal(err)
		}
		td := tpl.TaskDefinitions["Def"]
		c, plain := td.Containers[0], td.Containers[1]
		var add []string
		if trace == "yes" {
			add = []string{"SYS_PTRACE"}
		}
		if c.User != "1000:1000" || !slices.Equal(c.AddCapabilities, add) || !slices.Equal(c.DropCapabilities, []string{"NET_RAW", "SYS_" + trace}) {
			t.Errorf("Trace=%s: user %q, add %q, drop %q", trace, c.User, c.AddCapabilities, c.DropCapabilities)
		}
		if plain.User != "" || plain.AddCapabilities != nil || plain.DropCapabilities != nil {
			t.Errorf("a container without them: user %q, add %q, drop %q", plain.User, plain.AddCapabilities, plain.DropCapabilities)
		}
	}
	bad := strings.Replace(doc, "Drop: [NET_RAW, !Sub \"SYS_${Trace}\"]", "Drop: [[NET_RAW]]", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := template.Load(path, template.Options{TaskDefinitions: true})
	var pe *template.PathError
	if !errors.As(err, &pe) || pe.Path != "Resources.Def.Properties.ContainerDefinitions[0].LinuxParameters.Capabilities.Drop[0]" {
		t.Fatalf("a list inside Drop: %v", err)
	}
}
