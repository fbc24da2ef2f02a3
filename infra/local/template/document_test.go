package template_test

import (
	"errors"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
)

const document = `
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod], Description: where it runs}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  Bucket: {Type: String}
Mappings:
  Memory: {Size: {dev: 512, prod: 2048}}
Conditions:
  IsProd: !Equals [prod, !Ref Env]
  IsDev: !Not [{Condition: IsProd}]
  InRegion: {"Fn::Equals": [!Ref "AWS::Region", eu-west-1]}
  Both: !And [!Condition IsDev, !Condition InRegion]
  Either: !Or [!Condition IsProd, !Condition Both]
Resources:
  Queue: {Type: AWS::SQS::Queue, DeletionPolicy: Retain}
  Table: {Type: AWS::DynamoDB::Table, DependsOn: Queue}
  ProdTopic: {Type: AWS::SNS::Topic, Condition: IsProd}
  DevTopic:
    Type: AWS::SNS::Topic
    Condition: IsDev
    DependsOn: [Queue, Table]
    Metadata: {Note: !Ref Queue}
  Role:
    Type: AWS::IAM::Role
    Properties:
      Resource: !Sub arn:${AWS::Partition}:s3:::${Bucket}/${Queue}/${Table.Arn}/${!Literal}
      Vars: !Sub ["x-${Name}-${AWS::Region}", {Name: !GetAtt [Queue, Arn]}]
      Chosen: !If [IsDev, !Ref Queue, !Ref ProdTopic]
      Dropped: !If [IsProd, kept, !Ref AWS::NoValue]
      List: [one, !If [IsProd, two, !Ref AWS::NoValue], !Ref Env]
      Memory: !FindInMap [Memory, Size, !Ref Env]
      Joined: !Join ["+", !Split [",", "p,q"]]
      Second: !Select [1, !Ref Names]
      JoinedNames: !Join [",", !Ref Names]
      Secret: "{{resolve:secretsmanager:${Bucket}:SecretString}}"
      Null: ~
      Nothing: !Ref AWS::NoValue
      Missing: !Ref Nope
      Excluded: !GetAtt ProdTopic.Arn
Outputs:
  QueueName:
    Value: !Ref Queue
`

func parseDocument(t *testing.T, params map[string]string) *template.Document {
	t.Helper()
	d, err := template.ParseDocument([]byte(document), template.Options{
		Parameters: params,
		Resolver: template.MapResolver{
			Refs:  map[string]string{"AWS::Region": "eu-west-1", "AWS::Partition": "aws", "Queue": "q-name"},
			Attrs: map[string]string{"Queue.Arn": "arn:q", "Table.Arn": "arn:t"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// prop returns the property name of the Role resource.
func prop(d *template.Document, name string) *yaml.Node {
	return template.Lookup(d.Resources["Role"].Properties, name)
}

func TestParseDocument_Sections(t *testing.T) {
	d := parseDocument(t, map[string]string{"Bucket": "b"})
	dev := d.Resources["DevTopic"]
	if dev.LogicalID != "DevTopic" || dev.Type != "AWS::SNS::Topic" || dev.Condition != "IsDev" ||
		!reflect.DeepEqual(dev.DependsOn, []string{"Queue", "Table"}) || template.Lookup(dev.Metadata, "Note") == nil {
		t.Errorf("DevTopic = %+v", dev)
	}
	if tb := d.Resources["Table"]; !reflect.DeepEqual(tb.DependsOn, []string{"Queue"}) || tb.Properties != nil || tb.Condition != "" {
		t.Errorf("Table = %+v", tb)
	}
	if p := template.Lookup(d.Resources["Queue"].Node, "DeletionPolicy"); p == nil || p.Value != "Retain" {
		t.Errorf("Queue's entry lacks its DeletionPolicy: %v", p)
	}
	env := d.Parameters["Env"]
	if env.Value != "dev" || !env.HasValue || template.Lookup(env.Node, "Description").Value != "where it runs" {
		t.Errorf("Env = %+v", env)
	}
	if d.Parameters["Bucket"].Value != "b" {
		t.Errorf("Bucket = %+v", d.Parameters["Bucket"])
	}
	if v := template.Lookup(d.Outputs["QueueName"], "Value"); v == nil || v.Tag != "!Ref" {
		t.Errorf("output QueueName = %v", v)
	}
	if _, err := template.ParseDocument([]byte(document), template.Options{Parameters: map[string]string{"Env": "test"}}); !errors.Is(err, template.ErrParameter) {
		t.Errorf("a value outside AllowedValues: %v, want ErrParameter", err)
	}
}

func TestDocument_Eval(t *testing.T) {
	d := parseDocument(t, map[string]string{"Bucket": "b"})
	for name, want := range map[string]any{
		"Resource":    "arn:aws:s3:::b/q-name/arn:t/${Literal}",
		"Vars":        "x-arn:q-eu-west-1",
		"Chosen":      "q-name",
		"List":        []any{"one", "dev"},
		"Memory":      "512",
		"Joined":      "p+q",
		"Second":      "b",
		"JoinedNames": "a,b,c",
		"Secret":      "{{resolve:secretsmanager:${Bucket}:SecretString}}", // a string, not a Fn::Sub
		"Null":        nil,
		"Nothing":     nil,
	} {
		got, err := d.Eval(prop(d, name), "Role."+name)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, %v; want %#v", name, got, err, want)
		}
	}
	props, err := d.Eval(d.Resources["Role"].Properties, "Role")
	if err == nil {
		t.Fatalf("Role's properties evaluated (%v) despite !Ref Nope", props)
	}
	var pe *template.PathError
	if !errors.Is(err, template.ErrUnknownReference) || !errors.As(err, &pe) || pe.Path != "Role.Missing" {
		t.Errorf("err = %v, want ErrUnknownReference at Role.Missing", err)
	}
	if _, err := d.Eval(prop(d, "Excluded"), "Role.Excluded"); !errors.Is(err, template.ErrUnknownReference) {
		t.Errorf("!GetAtt of a resource its condition leaves out: %v, want ErrUnknownReference", err)
	}

	prod := parseDocument(t, map[string]string{"Bucket": "b", "Env": "prod"})
	for name, want := range map[string]any{
		"Dropped": "kept",
		"List":    []any{"one", "two", "prod"},
		"Memory":  "2048",
	} {
		if got, err := prod.Eval(prop(prod, name), name); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("prod: %s = %#v, %v; want %#v", name, got, err, want)
		}
	}
	if _, err := prod.Eval(prop(prod, "Chosen"), "Chosen"); !errors.Is(err, template.ErrUnresolved) {
		t.Errorf("prod: !Ref ProdTopic without a value from the resolver: %v, want ErrUnresolved", err)
	}
}

func TestDocument_EvalSymbolic(t *testing.T) {
	d := parseDocument(t, nil) // Bucket has no value: symbolically it needs none
	for name, want := range map[string]any{
		"Resource":    "arn:${AWS::Partition}:s3:::${Bucket}/${Queue}/${Table.Arn}/${!Literal}",
		"Vars":        "x-${Queue.Arn}-${AWS::Region}",
		"Chosen":      "${Queue}",
		"List":        []any{"one", "${Env}"},
		"Memory":      "512", // the keys choose the entry by value
		"Joined":      "p+q",
		"JoinedNames": "${Names}",
		"Secret":      "{{resolve:secretsmanager:${Bucket}:SecretString}}",
		"Nothing":     nil,
	} {
		got, err := d.EvalSymbolic(prop(d, name), "Role."+name)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, %v; want %#v", name, got, err, want)
		}
	}
	// A list parameter is a list of one item, its reference: it has no second item.
	if _, err := d.EvalSymbolic(prop(d, "Second"), "Role.Second"); !errors.Is(err, template.ErrInvalid) {
		t.Errorf("!Select of a list parameter: %v, want ErrInvalid", err)
	}
	if got, err := d.EvalSymbolic(template.Lookup(d.Resources["DevTopic"].Metadata, "Note"), "Note"); err != nil || got != "${Queue}" {
		t.Errorf("Metadata.Note = %v, %v", got, err)
	}
	// Symbolic evaluation is as strict as Eval about what a reference names.
	for _, name := range []string{"Missing", "Excluded"} {
		if _, err := d.EvalSymbolic(prop(d, name), name); !errors.Is(err, template.ErrUnknownReference) {
			t.Errorf("%s: %v, want ErrUnknownReference", name, err)
		}
	}
	prod := parseDocument(t, map[string]string{"Env": "prod"})
	if got, err := prod.EvalSymbolic(prop(prod, "Chosen"), "Chosen"); err != nil || got != "${ProdTopic}" {
		t.Errorf("prod: Chosen = %v, %v; want ${ProdTopic}", got, err)
	}
}

func TestDocument_Condition(t *testing.T) {
	for env, want := range map[string]map[string]bool{
		"dev":  {"IsProd": false, "IsDev": true, "InRegion": true, "Both": true, "Either": true},
		"prod": {"IsProd": true, "IsDev": false, "InRegion": true, "Both": false, "Either": true},
	} {
		d := parseDocument(t, map[string]string{"Env": env})
		for name, w := range want {
			if got, err := d.Condition(name); err != nil || got != w {
				t.Errorf("%s: %s = %v, %v; want %v", env, name, got, err, w)
			}
		}
		if _, err := d.Condition("Nope"); !errors.Is(err, template.ErrUnknownReference) {
			t.Errorf("undeclared condition: %v", err)
		}
	}
}

func TestDocument_OfType(t *testing.T) {
	for env, want := range map[string][]string{"dev": {"DevTopic"}, "prod": {"ProdTopic"}} {
		d := parseDocument(t, map[string]string{"Env": env})
		rs, err := d.OfType("AWS::SNS::Topic")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.LogicalID)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: topics %v, want %v", env, got, want)
		}
	}
}

func TestRefs(t *testing.T) {
	d := parseDocument(t, nil)
	for name, want := range map[string][]string{
		"Resource":    {"AWS::Partition", "Bucket", "Queue", "Table"},
		"Vars":        {"Queue", "AWS::Region"},
		"Chosen":      {"Queue", "ProdTopic"}, // both branches, whatever the condition
		"Memory":      {"Env"},
		"Joined":      nil,
		"JoinedNames": {"Names"},
		"Secret":      nil, // a dynamic reference in a plain string is not a Fn::Sub
	} {
		if got := template.Refs(prop(d, name)); !reflect.DeepEqual(got, want) {
			t.Errorf("Refs(%s) = %v, want %v", name, got, want)
		}
	}
}

func TestIntrinsic(t *testing.T) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(`[!Sub "a${B}", {"Fn::GetAtt": [Q, Arn]}, {Ref: X}, {Fn::Other: 1, Extra: 2}, plain]`), &n); err != nil {
		t.Fatal(err)
	}
	items := n.Content[0].Content
	for i, want := range []string{"Fn::Sub", "Fn::GetAtt", "Ref", "", ""} {
		name, arg, ok := template.Intrinsic(items[i])
		if name != want || ok != (want != "") || ok && arg == nil {
			t.Errorf("item %d: %q, %v, %v; want %q", i, name, arg, ok, want)
		}
	}
	if _, arg, _ := template.Intrinsic(items[0]); arg.Value != "a${B}" || arg.Tag != "" {
		t.Errorf("short form's argument = %+v, want the untagged scalar", arg)
	}
}

func TestLookup(t *testing.T) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("base: &b {c: {d: deep}}\na: *b\nlist: [x]\n"), &n); err != nil {
		t.Fatal(err)
	}
	root := n.Content[0]
	if got := template.Lookup(root, "a", "c", "d"); got == nil || got.Value != "deep" {
		t.Errorf("through an alias: %v", got)
	}
	for _, keys := range [][]string{{"nope"}, {"a", "nope", "d"}, {"list", "x"}} {
		if got := template.Lookup(root, keys...); got != nil {
			t.Errorf("Lookup %v = %v, want nil", keys, got)
		}
	}
	if template.Lookup(root) != root || template.Lookup(nil, "a") != nil {
		t.Error("Lookup without keys is the node itself; of nil, nil")
	}
}
