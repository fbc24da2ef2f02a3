package template

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// Document is a template as written, under one set of parameter values: its parameters,
// resources and outputs, and the evaluator of the intrinsic functions in them. Parse
// builds the local stack's model from one; checks of the template read through one what
// the model leaves out (roles, alarms, outputs).
//
// Evaluation is lazy: only the nodes passed to Eval or EvalSymbolic are evaluated, so a
// parameter without a value, or a reference the Resolver cannot answer, is an error only
// where it is used.
type Document struct {
	// Parameters by name, with their effective values.
	Parameters map[string]*Parameter
	// Resources by logical id.
	Resources map[string]*Resource
	// Outputs by name: each output's declaration (Value, Export, Condition) as written.
	Outputs map[string]*yaml.Node

	root             *yaml.Node
	values, symbolic *evaluator
}

// Resource is one entry of a template's Resources, as written.
type Resource struct {
	LogicalID string
	Type      string
	// Condition names the condition the resource exists under; "" when it always does.
	Condition string
	// DependsOn lists the resources named by DependsOn, written as one name or a list.
	DependsOn []string
	// Properties and Metadata are those sections, nil when absent; Node is the whole
	// entry (DeletionPolicy and the like).
	Properties, Metadata, Node *yaml.Node
}

// LoadDocument reads and parses the template at path; see ParseDocument.
func LoadDocument(path string, opts Options) (*Document, error) {
	return load(path, opts, ParseDocument)
}

// load reads the template at path and parses it with parse.
func load[T any](path string, opts Options, parse func([]byte, Options) (T, error)) (T, error) {
	var zero T
	b, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("read template: %w", err)
	}
	t, err := parse(b, opts)
	if err != nil {
		return zero, fmt.Errorf("parse %s: %w", path, err)
	}
	return t, nil
}

// ParseDocument parses a template and checks its parameter values (opts.Parameters
// over the defaults) against their constraints. Of opts it reads Parameters and
// Resolver; a nil Resolver resolves nothing.
func ParseDocument(data []byte, opts Options) (*Document, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = deref(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: top level is not a mapping", ErrInvalid)
	}
	res := opts.Resolver
	if res == nil {
		res = MapResolver{}
	}
	e := &evaluator{
		params:    map[string]*Parameter{},
		conds:     map[string]*yaml.Node{},
		condVals:  map[string]bool{},
		condBusy:  map[string]bool{},
		mappings:  Lookup(root, "Mappings"),
		resources: map[string]*Resource{},
		res:       res,
	}
	e.values = e
	if err := e.readParameters(Lookup(root, "Parameters"), opts.Parameters); err != nil {
		return nil, err
	}
	eachEntry(Lookup(root, "Conditions"), func(name string, n *yaml.Node) { e.conds[name] = n })
	rs := Lookup(root, "Resources")
	if rs == nil || rs.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: no Resources", ErrInvalid)
	}
	eachEntry(rs, func(id string, n *yaml.Node) { e.resources[id] = readResource(id, n) })
	outputs := map[string]*yaml.Node{}
	eachEntry(Lookup(root, "Outputs"), func(name string, n *yaml.Node) { outputs[name] = n })
	return &Document{
		Parameters: e.params,
		Resources:  e.resources,
		Outputs:    outputs,
		root:       root,
		values:     e,
		symbolic:   e.symbolicTwin(),
	}, nil
}

func readResource(id string, n *yaml.Node) *Resource {
	r := &Resource{
		LogicalID:  id,
		Type:       scalar(Lookup(n, "Type")),
		Condition:  scalar(Lookup(n, "Condition")),
		Properties: Lookup(n, "Properties"),
		Metadata:   Lookup(n, "Metadata"),
		Node:       n,
	}
	switch d := Lookup(n, "DependsOn"); {
	case d == nil:
	case d.Kind == yaml.SequenceNode:
		for _, c := range d.Content {
			r.DependsOn = append(r.DependsOn, deref(c).Value)
		}
	default:
		r.DependsOn = []string{d.Value}
	}
	return r
}

// scalar returns n's text, "" for nil.
func scalar(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

// eachEntry calls fn for each key and value of mapping m, in order; aliases are followed.
func eachEntry(m *yaml.Node, fn func(key string, value *yaml.Node)) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		fn(m.Content[i].Value, deref(m.Content[i+1]))
	}
}

// Eval evaluates n, part of this template, as the deployed stack would see it:
// parameters take their values, conditions decide Fn::If, and references only the stack
// knows go through the Resolver. It returns a string (a scalar of any YAML type, as its
// text), []any, map[string]any, or nil (YAML null); properties and list items that
// evaluate to AWS::NoValue are dropped, and n itself evaluating to it gives nil, as an
// absent property. Dynamic references ({{resolve:…}}) stay as written. path names n in
// errors, such as Resources.Table.Properties; every error is a *PathError wrapping one
// of this package's sentinel errors.
func (d *Document) Eval(n *yaml.Node, path string) (any, error) {
	return evalTop(d.values, n, path)
}

// EvalSymbolic evaluates n as Eval does, but writes what is not decided in the template
// itself as the Fn::Sub text that refers to it: !Ref Table is "${Table}", !Ref
// StageName (a parameter) is "${StageName}", !GetAtt Table.Arn is "${Table.Arn}", a
// Fn::Sub keeps its ${…} variables (and ${!Literal} escapes), and dynamic references
// stay as written. What decides the shape of the result still takes values: conditions,
// and so Fn::If, and the keys of Fn::FindInMap. It serves checks that hold a template to
// what it must say, such as a role's policy in terms of the stack's own resources.
// References to names the template does not declare, or to resources its conditions
// leave out, are errors as in Eval.
func (d *Document) EvalSymbolic(n *yaml.Node, path string) (any, error) {
	return evalTop(d.symbolic, n, path)
}

func evalTop(e *evaluator, n *yaml.Node, path string) (any, error) {
	v, err := e.eval(n, path)
	if err != nil || v == noValue {
		return nil, err
	}
	return v, nil
}

// Condition evaluates the condition declared under name in Conditions.
func (d *Document) Condition(name string) (bool, error) {
	return d.values.condition(name, "Conditions."+name)
}

// OfType returns the resources of type typ that exist under the parameter values (their
// conditions hold), sorted by logical id.
func (d *Document) OfType(typ string) ([]*Resource, error) {
	return d.values.ofType(typ, nil)
}
