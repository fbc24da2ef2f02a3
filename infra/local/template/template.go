package template

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Resource types the model reads. Every other type is ignored.
const (
	TypeFunction       = "AWS::Serverless::Function"
	TypeHTTPAPI        = "AWS::Serverless::HttpApi"
	TypeAPI            = "AWS::ApiGatewayV2::Api"
	TypeRoute          = "AWS::ApiGatewayV2::Route"
	TypeRouteResponse  = "AWS::ApiGatewayV2::RouteResponse"
	TypeIntegration    = "AWS::ApiGatewayV2::Integration"
	TypeAuthorizer     = "AWS::ApiGatewayV2::Authorizer"
	TypeStage          = "AWS::ApiGatewayV2::Stage"
	TypeLambdaFunction = "AWS::Lambda::Function"
	// TypeFunctionURL is what SAM generates for a function's FunctionUrlConfig, as
	// <LogicalId>Url; templates reference its FunctionUrl attribute.
	TypeFunctionURL     = "AWS::Lambda::Url"
	implicitHTTPAPIID   = "ServerlessHttpApi"
	defaultStageName    = "$default"
	functionIDSuffix    = "Function"
	functionsDir        = "functions"
	listParameterPrefix = "List<"
)

// Options configures Parse, and ParseDocument, which reads Parameters and Resolver only.
type Options struct {
	// Parameters overrides parameter defaults, by parameter name.
	Parameters map[string]string
	// TaskDefinitions asks Parse to read the ECS task definitions too.
	TaskDefinitions bool
	// Resolver answers references only the stack knows. Nil resolves nothing: any
	// such reference in a property the model reads is an ErrUnresolved error.
	Resolver Resolver
	// Functions, when not empty, limits the functions read to these logical ids, so
	// one function can run without values for what only the others need. HTTP API
	// routes then list only these functions' events.
	Functions []string
	// Roles asks Parse to read the IAM roles, and the roles, log groups, network
	// placement and secrets of functions, task definitions and schedules.
	Roles bool
}

// Template is the part of a SAM template the local stack runs.
type Template struct {
	Parameters map[string]*Parameter
	// Functions by logical id.
	Functions map[string]*Function
	// WebSocketAPIs and HTTPAPIs, sorted by logical id.
	WebSocketAPIs []*WebSocketAPI
	HTTPAPIs      []*HTTPAPI
	// TaskDefinitions by logical id (read only when Options.TaskDefinitions is set).
	TaskDefinitions map[string]*TaskDefinition
	// Roles by logical id (read only when Options.Roles is set).
	Roles map[string]*Role
}

// Parameter is a template parameter and its effective value.
type Parameter struct {
	Name string
	Type string
	// Value is the override, else the default; meaningful when HasValue.
	Value    string
	HasValue bool
	// Node is the parameter's declaration as written: Type, Default, Description and
	// the constraints.
	Node *yaml.Node
}

// IsList reports whether the parameter is a list type (CommaDelimitedList, List<...>).
func (p *Parameter) IsList() bool {
	return p.Type == "CommaDelimitedList" || strings.HasPrefix(p.Type, listParameterPrefix)
}

// List returns a list parameter's elements.
func (p *Parameter) List() []string {
	if p.Value == "" {
		return nil
	}
	parts := strings.Split(p.Value, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// Load reads and parses the template at path.
func Load(path string, opts Options) (*Template, error) { return load(path, opts, Parse) }

// Parse parses a SAM template. Unknown resource types and properties are ignored;
// conditions are evaluated where they decide what the model contains.
func Parse(data []byte, opts Options) (*Template, error) {
	d, err := ParseDocument(data, opts)
	if err != nil {
		return nil, err
	}
	e := d.values
	e.identities = opts.Roles
	t := &Template{Parameters: d.Parameters, Functions: map[string]*Function{}}
	only := map[string]bool{}
	for _, id := range opts.Functions {
		if r, ok := d.Resources[id]; !ok || r.Type != TypeFunction {
			return nil, &PathError{Path: "Resources." + id, Err: fmt.Errorf("%w: no AWS::Serverless::Function %s", ErrUnknownReference, id)}
		}
		only[id] = true
	}
	fns, err := e.ofType(TypeFunction, only)
	if err != nil {
		return nil, err
	}
	globals := Lookup(d.root, "Globals", "Function")
	for _, r := range fns {
		fn, err := e.readFunction(r, merge(globals, r.Properties))
		if err != nil {
			return nil, err
		}
		t.Functions[r.LogicalID] = fn
	}
	if opts.Roles {
		if t.Roles, err = e.readRoles(); err != nil {
			return nil, err
		}
	}
	if opts.TaskDefinitions {
		tds, err := e.ofType(TypeTaskDefinition, nil)
		if err != nil {
			return nil, err
		}
		t.TaskDefinitions = map[string]*TaskDefinition{}
		for _, r := range tds {
			td, err := e.readTaskDefinition(r)
			if err != nil {
				return nil, err
			}
			t.TaskDefinitions[r.LogicalID] = td
		}
	}
	if t.WebSocketAPIs, err = e.readWebSocketAPIs(t); err != nil {
		return nil, err
	}
	if t.HTTPAPIs, err = e.readHTTPAPIs(t); err != nil {
		return nil, err
	}
	return t, nil
}

func (e *evaluator) sorted() []*Resource {
	out := make([]*Resource, 0, len(e.resources))
	for _, r := range e.resources {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LogicalID < out[j].LogicalID })
	return out
}

// ofType returns the resources of type typ that exist under the parameters, sorted by
// logical id; when ids is not empty, only those among ids, whose conditions alone are
// evaluated.
func (e *evaluator) ofType(typ string, ids map[string]bool) ([]*Resource, error) {
	var out []*Resource
	for _, r := range e.sorted() {
		if r.Type != typ || len(ids) > 0 && !ids[r.LogicalID] {
			continue
		}
		ok, err := e.included(r)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

func (e *evaluator) readParameters(n *yaml.Node, overrides map[string]string) error {
	if n != nil {
		for i := 0; i+1 < len(n.Content); i += 2 {
			name, def := n.Content[i].Value, deref(n.Content[i+1])
			p := &Parameter{Name: name, Type: scalar(Lookup(def, "Type")), Node: def}
			if d := Lookup(def, "Default"); d != nil {
				p.Value, p.HasValue = scalarOrList(d), true
			}
			if v, ok := overrides[name]; ok {
				p.Value, p.HasValue = v, true
			}
			if p.HasValue {
				if err := checkParameter(p, def); err != nil {
					return &PathError{Path: "Parameters." + name, Err: err}
				}
			}
			e.params[name] = p
		}
	}
	for name := range overrides {
		if _, ok := e.params[name]; !ok {
			return &PathError{Path: "Parameters." + name, Err: fmt.Errorf("%w: override for an undeclared parameter", ErrParameter)}
		}
	}
	return nil
}

func scalarOrList(n *yaml.Node) string {
	if n.Kind == yaml.SequenceNode {
		parts := make([]string, len(n.Content))
		for i, c := range n.Content {
			parts[i] = deref(c).Value
		}
		return strings.Join(parts, ",")
	}
	return n.Value
}

// checkParameter applies the constraints CloudFormation checks before a deploy, so a
// bad override fails here, with the parameter named, rather than deep in a function.
func checkParameter(p *Parameter, def *yaml.Node) error {
	values := []string{p.Value}
	if p.IsList() {
		values = p.List()
	}
	for _, v := range values {
		if av := Lookup(def, "AllowedValues"); av != nil && av.Kind == yaml.SequenceNode {
			ok := false
			for _, a := range av.Content {
				ok = ok || deref(a).Value == v
			}
			if !ok {
				return fmt.Errorf("%w: %q is not one of the AllowedValues", ErrParameter, v)
			}
		}
		if ap := Lookup(def, "AllowedPattern"); ap != nil {
			re, err := regexp.Compile("^(?:" + ap.Value + ")$")
			if err != nil {
				return fmt.Errorf("%w: AllowedPattern: %v", ErrInvalid, err)
			}
			if !re.MatchString(v) {
				return fmt.Errorf("%w: %q does not match AllowedPattern %s", ErrParameter, v, ap.Value)
			}
		}
		if p.Type == "Number" {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%w: %q is not a number", ErrParameter, v)
			}
			if m := Lookup(def, "MinValue"); m != nil {
				if min, err := strconv.ParseFloat(m.Value, 64); err == nil && x < min {
					return fmt.Errorf("%w: %s is below MinValue %s", ErrParameter, v, m.Value)
				}
			}
			if m := Lookup(def, "MaxValue"); m != nil {
				if max, err := strconv.ParseFloat(m.Value, 64); err == nil && x > max {
					return fmt.Errorf("%w: %s is above MaxValue %s", ErrParameter, v, m.Value)
				}
			}
		}
	}
	return nil
}

// merge applies SAM's Globals rules: maps merge key by key with the function's value
// winning, lists concatenate (globals first), anything else is replaced. Intrinsic
// function calls are values, never merged into.
func merge(global, local *yaml.Node) *yaml.Node {
	global, local = deref(global), deref(local)
	if global == nil {
		return local
	}
	if local == nil {
		return global
	}
	_, _, gi := Intrinsic(global)
	_, _, li := Intrinsic(local)
	if gi || li || global.Kind != local.Kind {
		return local
	}
	switch local.Kind {
	case yaml.SequenceNode:
		out := *local
		out.Content = append(append([]*yaml.Node{}, global.Content...), local.Content...)
		return &out
	case yaml.MappingNode:
		out := *local
		out.Content = nil
		seen := map[string]bool{}
		for i := 0; i+1 < len(global.Content); i += 2 {
			k := global.Content[i].Value
			seen[k] = true
			out.Content = append(out.Content, global.Content[i], merge(global.Content[i+1], Lookup(local, k)))
		}
		for i := 0; i+1 < len(local.Content); i += 2 {
			if !seen[local.Content[i].Value] {
				out.Content = append(out.Content, local.Content[i], local.Content[i+1])
			}
		}
		return &out
	}
	return local
}
