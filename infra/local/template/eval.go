package template

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// noValue is what !Ref AWS::NoValue evaluates to: the enclosing property is dropped.
type noValueT struct{}

var noValue = noValueT{}

// evaluator resolves intrinsic functions lazily: only the properties the model reads
// are evaluated, so a parameter without a value (or a reference the stack cannot
// resolve) is an error only where it matters.
type evaluator struct {
	params    map[string]*Parameter
	conds     map[string]*yaml.Node
	condVals  map[string]bool
	condBusy  map[string]bool
	mappings  *yaml.Node
	resources map[string]*Resource
	res       Resolver
	// symbolic keeps parameters as the text that refers to them (with res giving
	// references as written); values is the evaluator that decides conditions and
	// Fn::FindInMap keys, which need values in either mode (e itself when not symbolic).
	symbolic bool
	values   *evaluator
	// identities reads what identities need: roles, and the roles, log groups and
	// secrets functions and tasks name (Options.Roles).
	identities bool
}

// symbolicTwin returns an evaluator over the same template that writes references
// instead of resolving them, sharing e's parameters and condition values.
func (e *evaluator) symbolicTwin() *evaluator {
	s := *e
	s.res, s.symbolic, s.values = written{}, true, e
	return &s
}

// Intrinsic reports whether n is an intrinsic function call, in short form (!Sub x)
// or long form ({"Fn::Sub": x}), and returns its long name ("Ref", "Fn::Sub", …) and
// its argument. The short form's argument is n without its tag.
func Intrinsic(n *yaml.Node) (name string, arg *yaml.Node, ok bool) {
	n = deref(n)
	if n == nil {
		return "", nil, false
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		name = n.Tag[1:]
		if name != "Ref" && name != "Condition" {
			name = "Fn::" + name
		}
		c := *n
		c.Tag = ""
		return name, &c, true
	}
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 {
		k := n.Content[0].Value
		if k == "Ref" || strings.HasPrefix(k, "Fn::") {
			return k, n.Content[1], true
		}
	}
	return "", nil, false
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// eval returns a string, []any, map[string]any, nil (YAML null) or noValue.
func (e *evaluator) eval(n *yaml.Node, path string) (any, error) {
	n = deref(n)
	if n == nil {
		return nil, nil
	}
	if name, arg, ok := Intrinsic(n); ok {
		return e.call(name, deref(arg), path)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := e.eval(c, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			if v != noValue {
				out = append(out, v)
			}
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			v, err := e.eval(n.Content[i+1], path+"."+k)
			if err != nil {
				return nil, err
			}
			if v != noValue {
				out[k] = v
			}
		}
		return out, nil
	}
	return nil, pathErrf(path, ErrInvalid, "unexpected YAML node")
}

func (e *evaluator) call(name string, arg *yaml.Node, path string) (any, error) {
	switch name {
	case "Ref":
		return e.ref(arg.Value, path)
	case "Fn::GetAtt":
		id, attr, err := getAttArgs(arg, path)
		if err != nil {
			return nil, err
		}
		return e.getAtt(id, attr, path)
	case "Fn::Sub":
		return e.sub(arg, path)
	case "Fn::Join":
		delim, list, err := pair(e, arg, name, path, e.str, e.list)
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(list))
		for i, v := range list {
			s, ok := v.(string)
			if !ok {
				return nil, pathErrf(path, ErrInvalid, "Fn::Join element %d is not a string", i)
			}
			parts[i] = s
		}
		return strings.Join(parts, delim), nil
	case "Fn::Select":
		is, list, err := pair(e, arg, name, path, e.str, e.list)
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(is)
		if err != nil || i < 0 || i >= len(list) {
			return nil, pathErrf(path, ErrInvalid, "Fn::Select index %q out of range for %d elements", is, len(list))
		}
		return list[i], nil
	case "Fn::Split":
		delim, src, err := pair(e, arg, name, path, e.str, e.str)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, s := range strings.Split(src, delim) {
			out = append(out, s)
		}
		return out, nil
	case "Fn::If":
		args, err := e.args(arg, 3, name, path)
		if err != nil {
			return nil, err
		}
		ok, err := e.condition(args[0].Value, path)
		if err != nil {
			return nil, err
		}
		if ok {
			return e.eval(args[1], path)
		}
		return e.eval(args[2], path)
	case "Fn::FindInMap":
		args, err := e.args(arg, 3, name, path)
		if err != nil {
			return nil, err
		}
		// The keys choose an entry, as a condition chooses a branch: they take values
		// in either mode.
		keys := make([]string, 3)
		for i := range keys {
			if keys[i], err = e.values.str(args[i], path); err != nil {
				return nil, err
			}
		}
		n := e.mappings
		for _, k := range keys {
			if n = Lookup(n, k); n == nil {
				return nil, pathErrf(path, ErrUnknownReference, "Fn::FindInMap %s", strings.Join(keys, "."))
			}
		}
		return e.eval(n, path)
	case "Fn::Base64":
		s, err := e.str(arg, path)
		if err != nil {
			return nil, err
		}
		return base64.StdEncoding.EncodeToString([]byte(s)), nil
	case "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition":
		return nil, pathErrf(path, ErrInvalid, "%s is only allowed in Conditions and Fn::If", name)
	}
	return nil, pathErrf(path, ErrUnsupported, "%s", name)
}

func getAttArgs(arg *yaml.Node, path string) (id, attr string, err error) {
	switch arg.Kind {
	case yaml.ScalarNode:
		id, attr, ok := strings.Cut(arg.Value, ".")
		if !ok {
			return "", "", pathErrf(path, ErrInvalid, "Fn::GetAtt %q is not Resource.Attribute", arg.Value)
		}
		return id, attr, nil
	case yaml.SequenceNode:
		if len(arg.Content) == 2 {
			return deref(arg.Content[0]).Value, deref(arg.Content[1]).Value, nil
		}
	}
	return "", "", pathErrf(path, ErrInvalid, "Fn::GetAtt wants Resource.Attribute or [Resource, Attribute]")
}

// pair evaluates the two arguments of function name, the first with first and the
// second with second (such as e.str and e.list for Fn::Join's delimiter and list).
func pair[A, B any](e *evaluator, arg *yaml.Node, name, path string,
	first func(*yaml.Node, string) (A, error), second func(*yaml.Node, string) (B, error),
) (a A, b B, err error) {
	args, err := e.args(arg, 2, name, path)
	if err != nil {
		return a, b, err
	}
	if a, err = first(args[0], path); err != nil {
		return a, b, err
	}
	b, err = second(args[1], path)
	return a, b, err
}

func (e *evaluator) args(arg *yaml.Node, n int, name, path string) ([]*yaml.Node, error) {
	if arg.Kind != yaml.SequenceNode || len(arg.Content) != n {
		return nil, pathErrf(path, ErrInvalid, "%s wants a list of %d arguments", name, n)
	}
	out := make([]*yaml.Node, n)
	for i, c := range arg.Content {
		out[i] = deref(c)
	}
	return out, nil
}

func (e *evaluator) ref(name, path string) (any, error) {
	if name == "AWS::NoValue" {
		return noValue, nil
	}
	if p, ok := e.params[name]; ok {
		if e.symbolic {
			ref := "${" + name + "}"
			if p.IsList() {
				// One item, so that Fn::Join of the list reads as the reference.
				return []any{ref}, nil
			}
			return ref, nil
		}
		if !p.HasValue {
			return nil, pathErrf(path, ErrParameter, "parameter %s has no Default and no override", name)
		}
		if p.IsList() {
			var out []any
			for _, s := range p.List() {
				out = append(out, s)
			}
			return out, nil
		}
		return p.Value, nil
	}
	if strings.HasPrefix(name, "AWS::") {
		v, err := e.res.Ref(name)
		if err != nil {
			return nil, pathErr(path, err)
		}
		return v, nil
	}
	r, ok := e.resource(name)
	if !ok {
		return nil, pathErrf(path, ErrUnknownReference, "!Ref %s: no such parameter or resource", name)
	}
	if err := e.present(r, path); err != nil {
		return nil, err
	}
	v, err := e.res.Ref(name)
	if err != nil {
		return nil, pathErr(path, err)
	}
	return v, nil
}

func (e *evaluator) getAtt(id, attr, path string) (any, error) {
	r, ok := e.resource(id)
	if !ok {
		return nil, pathErrf(path, ErrUnknownReference, "!GetAtt %s.%s: no such resource", id, attr)
	}
	if err := e.present(r, path); err != nil {
		return nil, err
	}
	v, err := e.res.GetAtt(id, attr)
	if err != nil {
		return nil, pathErr(path, err)
	}
	return v, nil
}

// resource returns the resource id names: one the template declares, or one SAM
// generates from it (see generated).
func (e *evaluator) resource(id string) (*Resource, bool) {
	if r, ok := e.resources[id]; ok {
		return r, true
	}
	return e.generated(id)
}

// generated returns the resource SAM's transform generates under id, which templates
// may reference: <Function>Url, the AWS::Lambda::Url of a function with a
// FunctionUrlConfig (its FunctionUrl attribute is the URL), under the function's
// condition.
func (e *evaluator) generated(id string) (*Resource, bool) {
	base, ok := strings.CutSuffix(id, "Url")
	if !ok {
		return nil, false
	}
	fn, ok := e.resources[base]
	if !ok || fn.Type != TypeFunction || Lookup(fn.Properties, "FunctionUrlConfig") == nil {
		return nil, false
	}
	return &Resource{LogicalID: id, Type: TypeFunctionURL, Condition: fn.Condition}, true
}

// present fails when r exists in the template but its Condition leaves it out.
func (e *evaluator) present(r *Resource, path string) error {
	ok, err := e.included(r)
	if err != nil {
		return err
	}
	if !ok {
		return pathErrf(path, ErrUnknownReference, "resource %s is excluded by its condition", r.LogicalID)
	}
	return nil
}

func (e *evaluator) included(r *Resource) (bool, error) {
	if r.Condition == "" {
		return true, nil
	}
	return e.condition(r.Condition, "Resources."+r.LogicalID+".Condition")
}

func (e *evaluator) sub(arg *yaml.Node, path string) (string, error) {
	tmplNode, vars := arg, (*yaml.Node)(nil)
	if arg.Kind == yaml.SequenceNode {
		if len(arg.Content) != 2 {
			return "", pathErrf(path, ErrInvalid, "Fn::Sub wants a string or [string, {variables}]")
		}
		tmplNode, vars = deref(arg.Content[0]), deref(arg.Content[1])
	}
	if tmplNode.Kind != yaml.ScalarNode {
		return "", pathErrf(path, ErrInvalid, "Fn::Sub template is not a string")
	}
	var b strings.Builder
	err := scanSub(tmplNode.Value, e.symbolic, func(lit string) { b.WriteString(lit) }, func(name string) error {
		var v any
		var err error
		switch {
		case Lookup(vars, name) != nil:
			v, err = e.eval(Lookup(vars, name), path+".Fn::Sub."+name)
		case !strings.HasPrefix(name, "AWS::") && strings.Contains(name, "."):
			id, attr, _ := strings.Cut(name, ".")
			v, err = e.getAtt(id, attr, path)
		default:
			v, err = e.ref(name, path)
		}
		if err != nil {
			return err
		}
		s, ok := v.(string)
		if !ok {
			return pathErrf(path, ErrInvalid, "Fn::Sub variable ${%s} is not a string", name)
		}
		b.WriteString(s)
		return nil
	})
	if err != nil {
		return "", pathErr(path, err)
	}
	return b.String(), nil
}

// scanSub walks a Fn::Sub template, calling lit for literal text and variable for
// each ${Name}; ${!Literal} stands for the text ${Literal}, or stays ${!Literal} when
// keepEscapes is set, so that symbolic output never mistakes it for a reference.
func scanSub(tmpl string, keepEscapes bool, lit func(string), variable func(string) error) error {
	for {
		i := strings.Index(tmpl, "${")
		if i < 0 {
			lit(tmpl)
			return nil
		}
		lit(tmpl[:i])
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return fmt.Errorf("%w: unterminated ${ in Fn::Sub", ErrInvalid)
		}
		name := strings.TrimSpace(tmpl[i+2 : i+j])
		tmpl = tmpl[i+j+1:]
		if strings.HasPrefix(name, "!") {
			if !keepEscapes {
				name = name[1:]
			}
			lit("${" + name + "}")
			continue
		}
		if err := variable(name); err != nil {
			return err
		}
	}
}

// Lookup follows keys through nested mappings from n, as in
// Lookup(resource.Properties, "LoggingConfig", "LogGroup"), and returns the node found
// (aliases followed), or nil where a key is missing or a node is not a mapping.
func Lookup(n *yaml.Node, keys ...string) *yaml.Node {
	n = deref(n)
	for _, key := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = deref(n.Content[i+1])
				break
			}
		}
		n = next
	}
	return n
}

// str evaluates n to a string, resolving dynamic references. Scalars of any YAML
// type (numbers, booleans) are taken as their text, as CloudFormation does.
func (e *evaluator) str(n *yaml.Node, path string) (string, error) {
	v, err := e.eval(n, path)
	if err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return e.dynamic(v, path)
	case nil:
		return "", nil
	}
	return "", pathErrf(path, ErrInvalid, "want a string, got %s", kind(v))
}

func (e *evaluator) list(n *yaml.Node, path string) ([]any, error) {
	v, err := e.eval(n, path)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case []any:
		return v, nil
	case nil, noValueT:
		return nil, nil
	}
	return nil, pathErrf(path, ErrInvalid, "want a list, got %s", kind(v))
}

func kind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	case noValueT:
		return "AWS::NoValue"
	}
	return fmt.Sprintf("%T", v)
}

// dynamic replaces each {{resolve:...}} in s through the resolver.
func (e *evaluator) dynamic(s, path string) (string, error) {
	for {
		i := strings.Index(s, "{{resolve:")
		if i < 0 {
			return s, nil
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			return "", pathErrf(path, ErrInvalid, "unterminated dynamic reference")
		}
		v, err := e.res.Dynamic(s[i+2 : i+j])
		if err != nil {
			return "", pathErr(path, err)
		}
		s = s[:i] + v + s[i+j+2:]
	}
}

// condition evaluates the declared condition name. Conditions decide what the
// template contains, so they take parameters' values even in symbolic mode.
func (e *evaluator) condition(name, path string) (bool, error) {
	e = e.values
	if v, ok := e.condVals[name]; ok {
		return v, nil
	}
	n, ok := e.conds[name]
	if !ok {
		return false, pathErrf(path, ErrUnknownReference, "condition %s is not declared", name)
	}
	if e.condBusy[name] {
		return false, pathErrf(path, ErrInvalid, "condition %s refers to itself", name)
	}
	e.condBusy[name] = true
	defer delete(e.condBusy, name)
	v, err := e.cond(n, "Conditions."+name)
	if err != nil {
		return false, err
	}
	e.condVals[name] = v
	return v, nil
}

func (e *evaluator) cond(n *yaml.Node, path string) (bool, error) {
	n = deref(n)
	name, arg, ok := Intrinsic(n)
	if !ok && n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[0].Value == "Condition" {
		name, arg, ok = "Condition", n.Content[1], true
	}
	if !ok {
		return false, pathErrf(path, ErrInvalid, "want a condition function")
	}
	arg = deref(arg)
	switch name {
	case "Condition":
		return e.condition(arg.Value, path)
	case "Fn::Equals":
		a, b, err := pair(e, arg, name, path, e.eval, e.eval)
		if err != nil {
			return false, err
		}
		return fmt.Sprint(a) == fmt.Sprint(b), nil
	case "Fn::Not":
		args, err := e.args(arg, 1, name, path)
		if err != nil {
			return false, err
		}
		v, err := e.cond(args[0], path)
		return !v, err
	case "Fn::And", "Fn::Or":
		if arg.Kind != yaml.SequenceNode || len(arg.Content) < 2 {
			return false, pathErrf(path, ErrInvalid, "%s wants at least two conditions", name)
		}
		for _, c := range arg.Content {
			v, err := e.cond(c, path)
			if err != nil {
				return false, err
			}
			if name == "Fn::And" && !v {
				return false, nil
			}
			if name == "Fn::Or" && v {
				return true, nil
			}
		}
		return name == "Fn::And", nil
	}
	return false, pathErrf(path, ErrInvalid, "%s is not a condition function", name)
}

// Refs returns the names n refers to, in order, without evaluating anything: each
// Ref's name, each Fn::GetAtt's resource and each Fn::Sub variable's resource,
// parameter or pseudo parameter (a variable the Fn::Sub defines itself contributes the
// names its value refers to). Like CloudFormation's dependency graph, it links routes
// to integrations and integrations to functions, whatever the conditions decide.
func Refs(n *yaml.Node) []string {
	n = deref(n)
	if n == nil {
		return nil
	}
	if name, arg, ok := Intrinsic(n); ok {
		arg = deref(arg)
		switch name {
		case "Ref":
			return []string{arg.Value}
		case "Fn::GetAtt":
			if id, _, err := getAttArgs(arg, ""); err == nil {
				return []string{id}
			}
			return nil
		case "Fn::Sub":
			tmpl, vars := arg, (*yaml.Node)(nil)
			if arg.Kind == yaml.SequenceNode && len(arg.Content) == 2 {
				tmpl, vars = deref(arg.Content[0]), deref(arg.Content[1])
			}
			var out []string
			_ = scanSub(tmpl.Value, false, func(string) {}, func(name string) error {
				if v := Lookup(vars, name); v != nil {
					out = append(out, Refs(v)...)
				} else {
					id, _, _ := strings.Cut(name, ".")
					out = append(out, id)
				}
				return nil
			})
			return out
		}
	}
	var out []string
	for _, c := range n.Content {
		out = append(out, Refs(c)...)
	}
	return out
}
