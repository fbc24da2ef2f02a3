package template

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Resource types of the event routing the local stack reads (LoadEvents).
const (
	TypeEventRule        = "AWS::Events::Rule"
	TypeLambdaPermission = "AWS::Lambda::Permission"
)

// Events is the template's event routing: the EventBridge rules and the Lambda
// permissions that let services (EventBridge among them) invoke its functions.
type Events struct {
	// Rules by logical id.
	Rules map[string]*Rule
	// Permissions, sorted by logical id.
	Permissions []*Permission
}

// Rule is one AWS::Events::Rule with an EventPattern (scheduled rules are not read).
type Rule struct {
	LogicalID string
	// Name is the Name property; empty when CloudFormation names the rule.
	Name string
	// EventBus is EventBusName, "default" when unset.
	EventBus string
	// Pattern is EventPattern as JSON (written as an object or as a JSON string).
	Pattern json.RawMessage
	// Enabled is false for State DISABLED.
	Enabled bool
	Targets []RuleTarget
}

// RuleTarget is one of a rule's Targets.
type RuleTarget struct {
	ID string
	// Arn is the target's ARN, resolved; Function the logical id of the template's
	// function it names ("" for any other target).
	Arn, Function string
	// Input is the constant JSON the target gets instead of the event ("" for the
	// event itself).
	Input string
	// MaxRetries and MaxEventAge are RetryPolicy's MaximumRetryAttempts and
	// MaximumEventAgeInSeconds (nil and 0 when unset: EventBridge's 185 and 24 h).
	MaxRetries  *int
	MaxEventAge int
	// DeadLetterArn is DeadLetterConfig.Arn, "" when unset.
	DeadLetterArn string
}

// Permission is one AWS::Lambda::Permission: a statement of a function's resource
// policy.
type Permission struct {
	LogicalID string
	// Function is the logical id of the template's function it is on ("" when
	// FunctionName names another); FunctionName is the property, resolved.
	Function, FunctionName string
	Action, Principal      string
	// SourceArn and SourceAccount, "" when unset, are conditions on the caller
	// (aws:SourceArn, aws:SourceAccount) when Principal is a service.
	SourceArn, SourceAccount string
}

// LoadEvents reads the event routing of the template at path; see ParseEvents.
func LoadEvents(path string, opts Options) (*Events, error) { return load(path, opts, ParseEvents) }

// ParseEvents reads a template's EventBridge rules with an event pattern and its Lambda
// permissions, under opts' parameters and resolver. A target's InputPath or
// InputTransformer, which the local stack does not apply, is an error rather than a
// rule delivered differently than EventBridge would.
func ParseEvents(data []byte, opts Options) (*Events, error) {
	d, err := ParseDocument(data, opts)
	if err != nil {
		return nil, err
	}
	e := d.values
	out := &Events{Rules: map[string]*Rule{}}
	rules, err := e.ofType(TypeEventRule, nil)
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		rule, ok, err := e.readRule(r)
		if err != nil {
			return nil, err
		}
		if ok {
			out.Rules[r.LogicalID] = rule
		}
	}
	perms, err := e.ofType(TypeLambdaPermission, nil)
	if err != nil {
		return nil, err
	}
	for _, r := range perms {
		p, err := e.readPermission(r)
		if err != nil {
			return nil, err
		}
		out.Permissions = append(out.Permissions, p)
	}
	sort.Slice(out.Permissions, func(i, j int) bool { return out.Permissions[i].LogicalID < out.Permissions[j].LogicalID })
	return out, nil
}

// PermissionsOn returns the permissions on the function with logical id function.
func (ev *Events) PermissionsOn(function string) []*Permission {
	var out []*Permission
	for _, p := range ev.Permissions {
		if p.Function == function {
			out = append(out, p)
		}
	}
	return out
}

// RuleIDs returns the rules' logical ids, sorted.
func (ev *Events) RuleIDs() []string {
	ids := make([]string, 0, len(ev.Rules))
	for id := range ev.Rules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (e *evaluator) readRule(r *Resource) (*Rule, bool, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	p := r.Properties
	pn := Lookup(p, "EventPattern")
	if pn == nil {
		return nil, false, nil // a scheduled rule
	}
	rule := &Rule{LogicalID: r.LogicalID, EventBus: "default", Enabled: true}
	var err error
	if rule.Name, err = e.optStr(p, "Name", base); err != nil {
		return nil, false, err
	}
	if bus, err := e.optStr(p, "EventBusName", base); err != nil {
		return nil, false, err
	} else if bus != "" {
		rule.EventBus = bus
	}
	switch st, err := e.optStr(p, "State", base); {
	case err != nil:
		return nil, false, err
	case st == "DISABLED":
		rule.Enabled = false
	case st != "" && st != "ENABLED" && st != "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS":
		return nil, false, pathErrf(base+".State", ErrInvalid, "want ENABLED or DISABLED, got %q", st)
	}
	v, err := e.eval(pn, base+".EventPattern")
	if err != nil {
		return nil, false, err
	}
	switch x := v.(type) {
	case map[string]any:
		if rule.Pattern, err = json.Marshal(x); err != nil {
			return nil, false, pathErrf(base+".EventPattern", ErrInvalid, "%v", err)
		}
	case string:
		if !json.Valid([]byte(x)) {
			return nil, false, pathErrf(base+".EventPattern", ErrInvalid, "not JSON")
		}
		rule.Pattern = json.RawMessage(x)
	default:
		return nil, false, pathErrf(base+".EventPattern", ErrInvalid, "want an object or a JSON string")
	}
	targets := deref(Lookup(p, "Targets"))
	if targets != nil && targets.Kind != yaml.SequenceNode {
		return nil, false, pathErrf(base+".Targets", ErrInvalid, "want a list")
	}
	if targets != nil {
		for i, tn := range targets.Content {
			t, err := e.readTarget(deref(tn), fmt.Sprintf("%s.Targets[%d]", base, i))
			if err != nil {
				return nil, false, err
			}
			rule.Targets = append(rule.Targets, t)
		}
	}
	return rule, true, nil
}

func (e *evaluator) readTarget(n *yaml.Node, path string) (RuleTarget, error) {
	var t RuleTarget
	var err error
	if t.ID, err = e.optStr(n, "Id", path); err != nil {
		return t, err
	}
	if t.Arn, err = e.optStr(n, "Arn", path); err != nil {
		return t, err
	}
	if t.ID == "" || t.Arn == "" {
		return t, pathErrf(path, ErrInvalid, "a target needs an Id and an Arn")
	}
	if _, ok := e.resources[firstRef(Lookup(n, "Arn"))]; ok {
		if id, err := e.functionOf(Lookup(n, "Arn"), path+".Arn"); err == nil {
			t.Function = id
		}
	}
	if t.Input, err = e.optStr(n, "Input", path); err != nil {
		return t, err
	}
	for _, unsupported := range []string{"InputPath", "InputTransformer"} {
		if Lookup(n, unsupported) != nil {
			return t, pathErrf(path+"."+unsupported, ErrInvalid, "not applied by the local stack")
		}
	}
	rp := Lookup(n, "RetryPolicy")
	if m := Lookup(rp, "MaximumRetryAttempts"); m != nil {
		s, err := e.str(m, path+".RetryPolicy.MaximumRetryAttempts")
		if err != nil {
			return t, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 0 || v > 185 {
			return t, pathErrf(path+".RetryPolicy.MaximumRetryAttempts", ErrInvalid, "want 0 to 185, got %q", s)
		}
		t.MaxRetries = &v
	}
	if a := Lookup(rp, "MaximumEventAgeInSeconds"); a != nil {
		s, err := e.str(a, path+".RetryPolicy.MaximumEventAgeInSeconds")
		if err != nil {
			return t, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 60 || v > 86400 {
			return t, pathErrf(path+".RetryPolicy.MaximumEventAgeInSeconds", ErrInvalid, "want 60 to 86400, got %q", s)
		}
		t.MaxEventAge = v
	}
	if t.DeadLetterArn, err = e.optStr(Lookup(n, "DeadLetterConfig"), "Arn", path+".DeadLetterConfig"); err != nil {
		return t, err
	}
	return t, nil
}

// firstRef is the first logical id n refers to ("" for none).
func firstRef(n *yaml.Node) string {
	if refs := Refs(n); len(refs) > 0 {
		return refs[0]
	}
	return ""
}

func (e *evaluator) readPermission(r *Resource) (*Permission, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	p := &Permission{LogicalID: r.LogicalID}
	props := r.Properties
	var err error
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"Action", &p.Action}, {"FunctionName", &p.FunctionName}, {"Principal", &p.Principal},
		{"SourceArn", &p.SourceArn}, {"SourceAccount", &p.SourceAccount},
	} {
		if *f.dst, err = e.optStr(props, f.key, base); err != nil {
			return nil, err
		}
	}
	if p.Action == "" || p.FunctionName == "" || p.Principal == "" {
		return nil, pathErrf(base, ErrInvalid, "a permission needs an Action, a FunctionName and a Principal")
	}
	if id, err := e.functionOf(Lookup(props, "FunctionName"), base+".FunctionName"); err == nil {
		p.Function = id
	}
	return p, nil
}
