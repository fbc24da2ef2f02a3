package eventbridge_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/eventbridge"
)

// The matching rules, each against events that must and must not match, after
// EventBridge's documentation of content filtering.
func TestPattern_Match(t *testing.T) {
	cases := []struct {
		name, pattern string
		match, miss   []string
	}{
		{"exact string", `{"source": ["aws.ecs"]}`,
			[]string{`{"source": "aws.ecs"}`, `{"source": "aws.ecs", "other": 1}`},
			[]string{`{"source": "aws.ec2"}`, `{"source": "AWS.ECS"}`, `{}`, `{"source": ["aws.ec2"]}`, `{"source": {"x": "aws.ecs"}}`}},
		{"any of the values", `{"detail-type": ["A", "B"]}`,
			[]string{`{"detail-type": "A"}`, `{"detail-type": "B"}`},
			[]string{`{"detail-type": "C"}`}},
		{"an event array matches by any element", `{"resources": ["arn:x"]}`,
			[]string{`{"resources": ["arn:y", "arn:x"]}`},
			[]string{`{"resources": ["arn:y"]}`, `{"resources": []}`}},
		{"numbers by value", `{"n": [5]}`,
			[]string{`{"n": 5}`, `{"n": 5.0}`},
			[]string{`{"n": "5"}`, `{"n": 6}`}},
		{"booleans and null", `{"b": [true], "z": [null]}`,
			[]string{`{"b": true, "z": null}`},
			[]string{`{"b": false, "z": null}`, `{"b": true}`, `{"b": "true", "z": null}`}},
		{"nested objects", `{"detail": {"lastStatus": ["STOPPED"], "inner": {"k": ["v"]}}}`,
			[]string{`{"detail": {"lastStatus": "STOPPED", "inner": {"k": "v"}}}`},
			[]string{`{"detail": {"lastStatus": "STOPPED"}}`, `{"detail": "STOPPED"}`, `{"lastStatus": "STOPPED", "inner": {"k": "v"}}`}},
		{"prefix", `{"arn": [{"prefix": "arn:aws:ecs:"}]}`,
			[]string{`{"arn": "arn:aws:ecs:us-east-1:1:task/c/1"}`},
			[]string{`{"arn": "arn:aws:ec2:x"}`, `{"arn": 1}`, `{}`}},
		{"prefix ignoring case", `{"s": [{"prefix": {"equals-ignore-case": "ESSENTIAL"}}]}`,
			[]string{`{"s": "Essential container in task exited"}`},
			[]string{`{"s": "Task stopped"}`}},
		{"suffix", `{"f": [{"suffix": ".png"}]}`,
			[]string{`{"f": "a.png"}`},
			[]string{`{"f": "a.PNG"}`}},
		{"equals-ignore-case", `{"s": [{"equals-ignore-case": "stopped"}]}`,
			[]string{`{"s": "STOPPED"}`},
			[]string{`{"s": "STOPPING"}`}},
		{"anything-but a value", `{"code": [{"anything-but": "UserInitiated"}]}`,
			[]string{`{"code": "EssentialContainerExited"}`},
			[]string{`{"code": "UserInitiated"}`, `{}`}},
		{"anything-but a list", `{"code": [{"anything-but": ["A", "B"]}]}`,
			[]string{`{"code": "C"}`},
			[]string{`{"code": "A"}`, `{"code": "B"}`}},
		{"anything-but a prefix", `{"g": [{"anything-but": {"prefix": "family:"}}]}`,
			[]string{`{"g": "service:web"}`},
			[]string{`{"g": "family:sandbox"}`}},
		{"numeric range", `{"n": [{"numeric": [">", 0, "<=", 5]}]}`,
			[]string{`{"n": 5}`, `{"n": 0.1}`},
			[]string{`{"n": 0}`, `{"n": 6}`, `{"n": "3"}`}},
		{"exists", `{"stopCode": [{"exists": true}], "gone": [{"exists": false}]}`,
			[]string{`{"stopCode": "X"}`},
			[]string{`{}`, `{"stopCode": "X", "gone": 1}`}},
		{"wildcard", `{"arn": [{"wildcard": "arn:*:task/sandboxes/*"}]}`,
			[]string{`{"arn": "arn:aws:ecs:us-east-1:1:task/sandboxes/abc"}`},
			[]string{`{"arn": "arn:aws:ecs:us-east-1:1:task/other/abc"}`}},
		{"$or", `{"source": ["aws.ecs"], "$or": [{"a": ["1"]}, {"b": ["2"]}]}`,
			[]string{`{"source": "aws.ecs", "a": "1"}`, `{"source": "aws.ecs", "b": "2"}`, `{"source": "aws.ecs", "a": "1", "b": "2"}`},
			[]string{`{"source": "aws.ecs"}`, `{"source": "aws.ec2", "a": "1"}`, `{"source": "aws.ecs", "a": "2"}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := eventbridge.Compile([]byte(c.pattern))
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range c.match {
				if ok, err := p.Match([]byte(ev)); err != nil || !ok {
					t.Errorf("%s should match %s (%v)", c.pattern, ev, err)
				}
			}
			for _, ev := range c.miss {
				if ok, err := p.Match([]byte(ev)); err != nil || ok {
					t.Errorf("%s should not match %s (%v)", c.pattern, ev, err)
				}
			}
		})
	}
}

// Patterns EventBridge refuses, and operators the local stack cannot match, fail at
// Compile: a rule is never matched by a guess.
func TestPattern_Compile_Refused(t *testing.T) {
	for _, p := range []string{
		`[]`, `{}`, `"x"`, `{"source": "aws.ecs"}`, `{"source": []}`, `{"detail": {}}`,
		`{"s": [{"prefix": 1}]}`, `{"s": [{"prefix": "a", "suffix": "b"}]}`, `{"ip": [{"cidr": "10.0.0.0/24"}]}`,
		`{"n": [{"numeric": [">"]}]}`, `{"n": [{"numeric": ["!", 1]}]}`, `{"e": [{"exists": "yes"}]}`,
		`{"$or": [{"a": ["1"]}]}`, `{"$or": {"a": ["1"]}}`, `{"x": [{"anything-but": []}]}`, `{"a": ["1"]} trailing`,
	} {
		if _, err := eventbridge.Compile([]byte(p)); !errors.Is(err, eventbridge.ErrPattern) {
			t.Errorf("Compile(%s) = %v, want ErrPattern", p, err)
		}
	}
}

// The pattern of template.yaml's TaskEventsRule against the events ECS sends for the
// sandbox cluster: a task that stopped, and one on its way down because it failed to
// start or its container exited, match; its other changes, other clusters and other
// sources do not.
func TestPattern_TaskEventsRule(t *testing.T) {
	const cluster = "arn:aws:ecs:us-east-1:000000000000:cluster/sandgate-local"
	p, err := eventbridge.Compile([]byte(`{
		"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
		"detail": {"clusterArn": ["` + cluster + `"],
			"$or": [{"lastStatus": ["STOPPED"]}, {"stopCode": ["TaskFailedToStart", "EssentialContainerExited"]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	ev := func(detail string) []byte {
		return []byte(`{"version": "0", "source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": ` + detail + `}`)
	}
	in := `"clusterArn": "` + cluster + `"`
	for _, d := range []string{
		`{` + in + `, "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "stopCode": "UserInitiated"}`,
		`{` + in + `, "lastStatus": "DEPROVISIONING", "desiredStatus": "STOPPED", "stopCode": "TaskFailedToStart"}`,
		`{` + in + `, "lastStatus": "RUNNING", "desiredStatus": "STOPPED", "stopCode": "EssentialContainerExited"}`,
	} {
		if ok, _ := p.Match(ev(d)); !ok {
			t.Errorf("should match %s", d)
		}
	}
	for _, d := range []string{
		`{` + in + `, "lastStatus": "RUNNING", "desiredStatus": "RUNNING"}`,
		`{` + in + `, "lastStatus": "STOPPING", "desiredStatus": "STOPPED", "stopCode": "UserInitiated"}`,
		`{"clusterArn": "` + strings.Replace(cluster, "sandgate-local", "other", 1) + `", "lastStatus": "STOPPED"}`,
	} {
		if ok, _ := p.Match(ev(d)); ok {
			t.Errorf("should not match %s", d)
		}
	}
	if ok, _ := p.Match([]byte(`{"source": "aws.ec2", "detail-type": "ECS Task State Change", "detail": {` + in + `, "lastStatus": "STOPPED"}}`)); ok {
		t.Error("matched another source")
	}
	if _, err := p.Match([]byte(`not json`)); err == nil {
		t.Error("matched a non-JSON event")
	}
}
