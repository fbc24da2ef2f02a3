package template_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
)

const eventsTemplate = `
Parameters:
  Stage: {Type: String, Default: prod}
Conditions:
  Never: !Equals [a, b]
Resources:
  Cluster:
    Type: AWS::ECS::Cluster
  TaskEventsFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: bootstrap}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: bootstrap}
  TaskEventsRule:
    Type: AWS::Events::Rule
    Properties:
      Description: the sandbox cluster's stopped tasks
      EventPattern:
        source: [aws.ecs]
        detail-type: [ECS Task State Change]
        detail:
          clusterArn: [!GetAtt Cluster.Arn]
          $or:
            - lastStatus: [STOPPED]
            - stopCode: [TaskFailedToStart]
      Targets:
        - Id: taskevents
          Arn: !GetAtt TaskEventsFunction.Arn
          RetryPolicy: {MaximumRetryAttempts: 10, MaximumEventAgeInSeconds: 3600}
  StringPatternRule:
    Type: AWS::Events::Rule
    Properties:
      Name: !Sub ${Stage}-string
      State: DISABLED
      EventPattern: '{"source": ["aws.ec2"]}'
      Targets:
        - {Id: other, Arn: !GetAtt OtherFunction.Arn, Input: '{"fixed": true}'}
  Scheduled:
    Type: AWS::Events::Rule
    Properties:
      ScheduleExpression: rate(5 minutes)
  Excluded:
    Type: AWS::Events::Rule
    Condition: Never
    Properties:
      EventPattern: {source: [x]}
  TaskEventsPermission:
    Type: AWS::Lambda::Permission
    Properties:
      Action: lambda:InvokeFunction
      FunctionName: !Ref TaskEventsFunction
      Principal: events.amazonaws.com
      SourceArn: !GetAtt TaskEventsRule.Arn
  OtherPermission:
    Type: AWS::Lambda::Permission
    Properties:
      Action: lambda:InvokeFunction
      FunctionName: !GetAtt OtherFunction.Arn
      Principal: apigateway.amazonaws.com
      SourceAccount: "123456789012"
`

// Rules with an event pattern (as an object or a JSON string), their targets with the
// function they name and their retry policy, and the Lambda permissions on each
// function; scheduled rules and rules their condition excludes are not read.
func TestParseEvents(t *testing.T) {
	ev, err := template.ParseEvents([]byte(eventsTemplate), template.Options{Resolver: localResolver()})
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.RuleIDs(); len(got) != 2 || got[0] != "StringPatternRule" || got[1] != "TaskEventsRule" {
		t.Fatalf("rules %v", got)
	}
	r := ev.Rules["TaskEventsRule"]
	if r.Name != "" || r.EventBus != "default" || !r.Enabled || len(r.Targets) != 1 {
		t.Fatalf("rule %+v", r)
	}
	var pattern map[string]any
	if err := json.Unmarshal(r.Pattern, &pattern); err != nil {
		t.Fatal(err)
	}
	detail := pattern["detail"].(map[string]any)
	if detail["clusterArn"].([]any)[0] != "arn:Cluster.Arn" || len(detail["$or"].([]any)) != 2 {
		t.Fatalf("pattern %s", r.Pattern)
	}
	tg := r.Targets[0]
	if tg.ID != "taskevents" || tg.Arn != "arn:TaskEventsFunction.Arn" || tg.Function != "TaskEventsFunction" ||
		tg.MaxRetries == nil || *tg.MaxRetries != 10 || tg.MaxEventAge != 3600 || tg.Input != "" {
		t.Fatalf("target %+v", tg)
	}
	s := ev.Rules["StringPatternRule"]
	if s.Name != "prod-string" || s.Enabled || string(s.Pattern) != `{"source": ["aws.ec2"]}` ||
		s.Targets[0].Function != "OtherFunction" || s.Targets[0].Input != `{"fixed": true}` {
		t.Fatalf("string-pattern rule %+v", s)
	}
	ps := ev.PermissionsOn("TaskEventsFunction")
	if len(ps) != 1 || ps[0].Principal != "events.amazonaws.com" || ps[0].Action != "lambda:InvokeFunction" ||
		ps[0].SourceArn != "arn:TaskEventsRule.Arn" || ps[0].FunctionName != "phys-TaskEventsFunction" {
		t.Fatalf("permissions on TaskEventsFunction %+v", ps)
	}
	if ps := ev.PermissionsOn("OtherFunction"); len(ps) != 1 || ps[0].SourceAccount != "123456789012" || ps[0].FunctionName != "arn:OtherFunction.Arn" {
		t.Fatalf("permissions on OtherFunction %+v", ps)
	}
}

// What the local stack cannot deliver as EventBridge would is refused.
func TestParseEvents_Refused(t *testing.T) {
	for name, rule := range map[string]string{
		"input path":      `{Id: a, Arn: !GetAtt F.Arn, InputPath: $.detail}`,
		"transformer":     `{Id: a, Arn: !GetAtt F.Arn, InputTransformer: {InputTemplate: x}}`,
		"no id":           `{Arn: !GetAtt F.Arn}`,
		"retries":         `{Id: a, Arn: !GetAtt F.Arn, RetryPolicy: {MaximumRetryAttempts: 200}}`,
		"event age":       `{Id: a, Arn: !GetAtt F.Arn, RetryPolicy: {MaximumEventAgeInSeconds: 10}}`,
		"bad json string": ``,
	} {
		src := `
Resources:
  F: {Type: AWS::Serverless::Function, Properties: {Handler: bootstrap}}
  R:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [x]}
      Targets: [` + rule + `]
`
		if name == "bad json string" {
			src = `
Resources:
  R: {Type: AWS::Events::Rule, Properties: {EventPattern: '{"source": '}}
`
		}
		if _, err := template.ParseEvents([]byte(src), template.Options{Resolver: localResolver()}); !errors.Is(err, template.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// The repository's template: one rule, on the sandbox cluster's task state changes,
// targets the TaskEvents function, which only EventBridge may invoke, and only for
// that rule.
func TestParseEvents_RepositoryTemplate(t *testing.T) {
	ev, err := template.LoadEvents("../../../template.yaml", template.Options{Parameters: requiredParams(t, nil), Resolver: localResolver()})
	if err != nil {
		t.Fatal(err)
	}
	r := ev.Rules["TaskEventsRule"]
	if r == nil || len(r.Targets) != 1 || r.Targets[0].Function != "TaskEventsFunction" || !r.Enabled {
		t.Fatalf("TaskEventsRule %+v", r)
	}
	ps := ev.PermissionsOn("TaskEventsFunction")
	if len(ps) != 1 || ps[0].Principal != "events.amazonaws.com" || ps[0].SourceArn != "arn:TaskEventsRule.Arn" {
		t.Fatalf("permissions %+v", ps)
	}
}
