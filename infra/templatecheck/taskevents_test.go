package templatecheck_test

import (
	"testing"

	"github.com/sandgate/sandgate/infra/local/eventbridge"
	"github.com/sandgate/sandgate/infra/local/template"
)

// The task events route: one rule takes the sandbox cluster's task state changes that
// end a task (STOPPED, or a failed start or exited container on the way down) to the
// TaskEvents function, with a retry policy written down; only EventBridge may invoke
// that function, and only for that rule; its own asynchronous retries are the
// handler's idempotent ones; cleanup's corrections of the counter are alarmed.
func TestTaskEvents_Route(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	rules := raw.ofType(t, template.TypeEventRule)
	if len(rules) != 1 || rules[0].LogicalID != "TaskEventsRule" {
		t.Fatalf("event rules %v, want TaskEventsRule only", rules)
	}
	p := raw.render(t, rules[0].Properties).(map[string]any)
	want := `{"detail":{"$or":[{"lastStatus":["STOPPED"]},{"stopCode":["TaskFailedToStart","EssentialContainerExited"]}],` +
		`"clusterArn":["${Cluster.Arn}"]},"detail-type":["ECS Task State Change"],"source":["aws.ecs"]}`
	if got := canonical(p["EventPattern"]); got != want {
		t.Errorf("EventPattern %s\nwant %s", got, want)
	}
	if p["State"] != nil && p["State"] != "ENABLED" {
		t.Errorf("rule state %v", p["State"])
	}
	targets := list(p["Targets"])
	if len(targets) != 1 {
		t.Fatalf("targets %v", targets)
	}
	tg := targets[0].(map[string]any)
	if tg["Arn"] != "${TaskEventsFunction.Arn}" || tg["Input"] != nil || tg["InputPath"] != nil || tg["InputTransformer"] != nil {
		t.Errorf("target %v: want the function, given the event itself", tg)
	}
	rp, _ := tg["RetryPolicy"].(map[string]any)
	if rp["MaximumRetryAttempts"] == nil || rp["MaximumEventAgeInSeconds"] == nil {
		t.Errorf("target retry policy %v: write it down", rp)
	}

	var perms []map[string]any
	for _, r := range raw.ofType(t, template.TypeLambdaPermission) {
		pp := raw.render(t, r.Properties).(map[string]any)
		if pp["FunctionName"] == "${TaskEventsFunction}" || pp["FunctionName"] == "${TaskEventsFunction.Arn}" {
			perms = append(perms, pp)
		}
	}
	if len(perms) != 1 || perms[0]["Principal"] != "events.amazonaws.com" || perms[0]["Action"] != "lambda:InvokeFunction" ||
		perms[0]["SourceArn"] != "${TaskEventsRule.Arn}" {
		t.Errorf("permissions on TaskEventsFunction %v: want events.amazonaws.com for TaskEventsRule only", perms)
	}

	tpl, _ := loadModel(t, scenarios[0])
	fn := tpl.Functions["TaskEventsFunction"]
	if fn == nil || fn.AsyncRetries == nil || *fn.AsyncRetries != 2 || len(fn.Events) != 0 || fn.URLAuthType != "" || fn.FunctionName != "" {
		t.Errorf("TaskEventsFunction %+v: want Lambda's two retries of the idempotent handler, no events, URL or fixed name", fn)
	}

	a := raw.Resources["CapacityCorrectionsAlarm"]
	if a == nil {
		t.Fatal("no CapacityCorrectionsAlarm")
	}
	ap := raw.render(t, a.Properties).(map[string]any)
	if ap["Namespace"] != "Sandgate" || ap["MetricName"] != "CapacityCorrections" || ap["Threshold"] != "1" ||
		canonical(ap["Dimensions"]) != `[{"Name":"Stage","Value":"${StageName}"}]` || canonical(ap["AlarmActions"]) != `["${AlarmTopic}"]` {
		t.Errorf("CapacityCorrectionsAlarm %v: want any correction in a stage to notify the alarm topic", ap)
	}
}

// The rule's pattern, as the local stack reads it from the template, compiles with the
// local stack's EventBridge matching: the route is exercised end to end locally.
func TestTaskEvents_PatternCompilesLocally(t *testing.T) {
	ev, err := template.LoadEvents(templatePath, template.Options{Parameters: scenarios[0].params, Resolver: newResolver()})
	if err != nil {
		t.Fatal(err)
	}
	r := ev.Rules["TaskEventsRule"]
	if r == nil {
		t.Fatal("no TaskEventsRule")
	}
	if _, err := eventbridge.Compile(r.Pattern); err != nil {
		t.Fatal(err)
	}
}
