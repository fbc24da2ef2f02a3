package stack

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/sandgate/sandgate/infra/local/eventbridge"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/logging"
)

// EventsService is the service principal EventBridge invokes a rule's Lambda target as.
const EventsService = "events.amazonaws.com"

// Log keys of the event routing.
const (
	logRule     = "rule"
	logFunction = "function"
	logTarget   = "target"
)

// eventRouter is the stack's EventBridge: it routes the events the emulators emit (ECS
// task state changes) through the template's rules as EventBridge does. Each event is
// matched against every enabled rule of the default bus (eventbridge.Pattern); a rule
// that matches delivers it to each Lambda target asynchronously, through the Invoke
// API's asynchronous path (lambdart.InvokeAsync, with the function's own retries), as
// events.amazonaws.com — when the function's resource policy, the template's
// AWS::Lambda::Permission resources, lets that principal invoke it for that rule (its
// SourceArn and SourceAccount). A delivery no permission allows is refused and logged
// each time, as EventBridge's FailedInvocations would count it. What the stack cannot
// deliver as EventBridge would (a target that is not one of the template's functions,
// an InputPath or InputTransformer) stops the stack from starting.
type eventRouter struct {
	log    *slog.Logger
	routes []eventRoute

	mu sync.Mutex
	rt *lambdart.Runtime // nil until the functions run
}

type eventRoute struct {
	rule, arn string
	pattern   *eventbridge.Pattern
	targets   []eventTarget
}

type eventTarget struct {
	id, function, name string // target id, function logical id, running name
	input              string
	// allowedBy names the permission that lets EventBridge invoke the function for
	// this rule; "" when none does.
	allowedBy string
}

// ruleARN is the ARN of the rule with logical id id, as the stack names it (Ref of the
// rule is StackName-id, its physical name).
func ruleARN(id string) string {
	return fmt.Sprintf("arn:aws:events:%s:%s:rule/%s-%s", Region, AccountID, StackName, id)
}

// loadEvents reads the template's rules and permissions (with the references the
// stack resolves) into a router; tpl names the functions.
func loadEvents(path string, opts template.Options, tpl *template.Template, log *slog.Logger) (*eventRouter, error) {
	ev, err := template.LoadEvents(path, opts)
	if err != nil {
		return nil, err
	}
	r := &eventRouter{log: log}
	for _, id := range ev.RuleIDs() {
		rule := ev.Rules[id]
		if !rule.Enabled || rule.EventBus != "default" {
			continue
		}
		p, err := eventbridge.Compile(rule.Pattern)
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", id, err)
		}
		route := eventRoute{rule: id, arn: ruleARN(id), pattern: p}
		for _, t := range rule.Targets {
			fn := tpl.Functions[t.Function]
			if fn == nil {
				return nil, fmt.Errorf("rule %s: target %s (%s) is not a function of the template; the local stack delivers to functions only", id, t.ID, t.Arn)
			}
			et := eventTarget{id: t.ID, function: t.Function, name: FunctionName(fn), input: t.Input}
			if p := allowingPermission(ev.PermissionsOn(t.Function), route.arn, AccountID); p != nil {
				et.allowedBy = p.LogicalID
			}
			route.targets = append(route.targets, et)
		}
		r.routes = append(r.routes, route)
	}
	return r, nil
}

// allowingPermission returns the first of perms (statements of one function's resource
// policy) that lets EventBridge invoke the function for the rule ruleArn of account:
// lambda:InvokeFunction for events.amazonaws.com, with a SourceArn the rule matches
// (ArnLike) and a SourceAccount that is the account, where they are set.
func allowingPermission(perms []*template.Permission, ruleArn, account string) *template.Permission {
	for _, p := range perms {
		action := strings.ToLower(p.Action)
		if action != "lambda:invokefunction" && action != "lambda:*" {
			continue
		}
		if p.Principal != EventsService && p.Principal != "*" {
			continue
		}
		if p.SourceArn != "" && !arnLike(p.SourceArn, ruleArn) {
			continue
		}
		if p.SourceAccount != "" && p.SourceAccount != account {
			continue
		}
		if strings.Count(p.FunctionName, ":") == 1 || strings.Count(p.FunctionName, ":") == 7 {
			continue // a qualified function (an alias or version), not the one invoked
		}
		return p
	}
	return nil
}

// arnLike is IAM's ArnLike: * matches any run of characters, ? any one, each of the
// six colon-separated parts on its own.
func arnLike(pattern, arn string) bool {
	pp, ap := strings.SplitN(pattern, ":", 6), strings.SplitN(arn, ":", 6)
	if len(pp) != 6 || len(ap) != 6 {
		return false
	}
	for i := range pp {
		if !glob(pp[i], ap[i]) {
			return false
		}
	}
	return true
}

// glob matches s against pattern, where * is any run of characters and ? any one.
func glob(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if glob(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		}
	}
	return s == ""
}

// attach lets the router invoke rt's functions; before, matched events are dropped.
func (r *eventRouter) attach(rt *lambdart.Runtime) {
	r.mu.Lock()
	r.rt = rt
	r.mu.Unlock()
}

// deliver routes one event; it is ecslocal's Events sink.
func (r *eventRouter) deliver(event []byte) {
	r.mu.Lock()
	rt := r.rt
	r.mu.Unlock()
	for _, route := range r.routes {
		ok, err := route.pattern.Match(event)
		if err != nil {
			r.log.Warn("event not routed", logRule, route.rule, logging.Error, err.Error())
			return
		}
		if !ok {
			continue
		}
		for _, t := range route.targets {
			log := r.log.With(logRule, route.rule, logTarget, t.id, logFunction, t.name)
			if t.allowedBy == "" {
				log.Warn("event delivery refused: no statement of the function's resource policy lets " +
					EventsService + " invoke it for this rule (AWS::Lambda::Permission with SourceArn " + route.arn + ")")
				continue
			}
			if rt == nil {
				log.Debug("event not delivered: the stack runs no functions")
				continue
			}
			payload := event
			if t.input != "" {
				payload = []byte(t.input)
			}
			if err := rt.InvokeAsync(t.name, payload); err != nil {
				log.Warn("event delivery failed", logging.Error, err.Error())
			}
		}
	}
}
