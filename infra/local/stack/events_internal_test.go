package stack

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
)

// A function's resource policy lets EventBridge invoke it for a rule only through a
// statement for events.amazonaws.com (or *), for InvokeFunction, whose SourceArn the
// rule's ARN matches and whose SourceAccount is the rule's account, on the function
// itself rather than an alias.
func TestAllowingPermission(t *testing.T) {
	rule := ruleARN("R")
	ok := template.Permission{LogicalID: "P", Action: "lambda:InvokeFunction", Principal: EventsService, FunctionName: "F", SourceArn: rule}
	for name, c := range map[string]struct {
		edit  func(*template.Permission)
		allow bool
	}{
		"exact":             {func(*template.Permission) {}, true},
		"no source":         {func(p *template.Permission) { p.SourceArn = "" }, true},
		"source pattern":    {func(p *template.Permission) { p.SourceArn = "arn:aws:events:*:" + AccountID + ":rule/*" }, true},
		"account":           {func(p *template.Permission) { p.SourceAccount = AccountID }, true},
		"any action":        {func(p *template.Permission) { p.Action = "lambda:*" }, true},
		"function ARN":      {func(p *template.Permission) { p.FunctionName = "arn:aws:lambda:us-east-1:000000000000:function:F" }, true},
		"another rule":      {func(p *template.Permission) { p.SourceArn = ruleARN("Other") }, false},
		"another account":   {func(p *template.Permission) { p.SourceAccount = "123456789012" }, false},
		"another principal": {func(p *template.Permission) { p.Principal = "apigateway.amazonaws.com" }, false},
		"another action":    {func(p *template.Permission) { p.Action = "lambda:GetFunction" }, false},
		"an alias":          {func(p *template.Permission) { p.FunctionName = "F:live" }, false},
	} {
		p := ok
		c.edit(&p)
		if got := allowingPermission([]*template.Permission{&p}, rule, AccountID) != nil; got != c.allow {
			t.Errorf("%s: allowed = %v, want %v", name, got, c.allow)
		}
	}
	if allowingPermission(nil, rule, AccountID) != nil {
		t.Error("no policy allowed the invocation")
	}
}

func TestArnLike(t *testing.T) {
	for _, c := range []struct {
		pattern, arn string
		match        bool
	}{
		{"arn:aws:events:us-east-1:1:rule/r", "arn:aws:events:us-east-1:1:rule/r", true},
		{"arn:aws:events:*:1:rule/*", "arn:aws:events:us-east-1:1:rule/r", true},
		{"arn:aws:events:us-east-?:1:rule/r", "arn:aws:events:us-east-1:1:rule/r", true},
		{"arn:aws:events:us-east-1:1:rule/r", "arn:aws:events:us-east-1:1:rule/r2", false},
		{"arn:aws:events:*", "arn:aws:events:us-east-1:1:rule/r", false}, // each part on its own
		{"arn:aws:events:us-east-1:2:rule/r", "arn:aws:events:us-east-1:1:rule/r", false},
	} {
		if got := arnLike(c.pattern, c.arn); got != c.match {
			t.Errorf("arnLike(%s, %s) = %v", c.pattern, c.arn, got)
		}
	}
}

const routingTemplate = `
Resources:
  Cluster: {Type: AWS::ECS::Cluster}
  GoodFunction: {Type: AWS::Serverless::Function, Properties: {Handler: bootstrap}}
  WrongRuleFunction: {Type: AWS::Serverless::Function, Properties: {Handler: bootstrap}}
  NoPermissionFunction: {Type: AWS::Serverless::Function, Properties: {Handler: bootstrap}}
  Good:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [aws.ecs], detail: {clusterArn: [!GetAtt Cluster.Arn]}}
      Targets: [{Id: good, Arn: !GetAtt GoodFunction.Arn}]
  WrongRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [aws.ecs]}
      Targets: [{Id: wrong, Arn: !GetAtt WrongRuleFunction.Arn}]
  NoPermission:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [aws.ecs]}
      Targets: [{Id: none, Arn: !GetAtt NoPermissionFunction.Arn}]
  Elsewhere:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [aws.ec2]}
      Targets: [{Id: elsewhere, Arn: !GetAtt GoodFunction.Arn}]
  GoodPermission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref GoodFunction, Principal: events.amazonaws.com, SourceArn: !GetAtt Good.Arn}
  WrongRulePermission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref WrongRuleFunction, Principal: events.amazonaws.com, SourceArn: !GetAtt Good.Arn}
  ApiPermission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref NoPermissionFunction, Principal: apigateway.amazonaws.com}
`

// Each event goes to the targets of the rules it matches; a target whose function's
// policy does not let EventBridge invoke it for that rule is refused, logged, every
// time.
func TestEventRouter_RoutesByPatternAndPermission(t *testing.T) {
	path := filepath.Join(t.TempDir(), "template.yaml")
	if err := os.WriteFile(path, []byte(routingTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Stack{Cluster: StackName}
	res := &resolver{stack: s, types: map[string]string{}, functionNames: map[string]string{}}
	doc, err := template.LoadDocument(path, template.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	for id, r := range doc.Resources {
		res.types[id] = r.Type
	}
	opts := template.Options{Resolver: res}
	tpl, err := template.Load(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	r, err := loadEvents(path, opts, tpl, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.routes) != 4 {
		t.Fatalf("routes %+v", r.routes)
	}
	lines := func() map[string]string { // target → what happened
		out := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			out[m[logTarget].(string)] = m["msg"].(string)
		}
		buf.Reset()
		return out
	}
	r.deliver([]byte(`{"source": "aws.ecs", "detail": {"clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/sandgate-local"}}`))
	got := lines()
	if len(got) != 3 || got["good"] != "event not delivered: the stack runs no functions" ||
		!strings.HasPrefix(got["wrong"], "event delivery refused") || !strings.HasPrefix(got["none"], "event delivery refused") {
		t.Fatalf("deliveries %v", got)
	}
	r.deliver([]byte(`{"source": "aws.ecs", "detail": {"clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/other"}}`))
	if got := lines(); len(got) != 2 || got["good"] != "" {
		t.Fatalf("another cluster's event reached the good rule: %v", got)
	}
	r.deliver([]byte(`{"source": "aws.s3"}`))
	if got := lines(); len(got) != 0 {
		t.Fatalf("an event no rule matches was delivered: %v", got)
	}
}
