package eventbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrPattern: the pattern is not one EventBridge would accept, or uses something
// this package does not match (cidr). Rules with such a pattern are refused when the
// stack starts, never silently matched.
var ErrPattern = errors.New("invalid event pattern")

// Pattern is a compiled event pattern
// (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html):
// every field it names must match (a nested object names fields of the event's
// nested object), a field matches when any of its values matches the event's value
// or, for an array in the event, any of its elements; "$or" holds alternatives of
// which one must match besides the other fields.
type Pattern struct{ root *object }

// object is a pattern object: fields, each a nested object or a list of matchers,
// and $or alternatives.
type object struct {
	fields map[string]*field
	or     []*object
}

type field struct {
	object   *object   // a nested object, or
	matchers []matcher // a leaf's matchers
}

// matcher matches one scalar of the event (a string, json.Number, bool or nil);
// present is false when the field is absent (only exists: false matches that).
type matcher func(v any, present bool) bool

// Compile parses pattern, a JSON object.
func Compile(pattern []byte) (*Pattern, error) {
	v, err := decode(pattern)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPattern, err)
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, fmt.Errorf("%w: want a non-empty JSON object", ErrPattern)
	}
	o, err := compileObject(m, "")
	if err != nil {
		return nil, err
	}
	return &Pattern{root: o}, nil
}

// Match reports whether event, a JSON object, matches the pattern.
func (p *Pattern) Match(event []byte) (bool, error) {
	v, err := decode(event)
	if err != nil {
		return false, fmt.Errorf("match event: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return false, errors.New("match event: not a JSON object")
	}
	return p.root.match(m), nil
}

func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func compileObject(m map[string]any, at string) (*object, error) {
	o := &object{fields: map[string]*field{}}
	for k, v := range m {
		where := join(at, k)
		if k == "$or" {
			alts, ok := v.([]any)
			if !ok || len(alts) < 2 {
				return nil, fmt.Errorf("%w: %s: want an array of at least two patterns", ErrPattern, where)
			}
			for i, a := range alts {
				am, ok := a.(map[string]any)
				if !ok || len(am) == 0 {
					return nil, fmt.Errorf("%w: %s[%d]: want a non-empty object", ErrPattern, where, i)
				}
				alt, err := compileObject(am, at)
				if err != nil {
					return nil, err
				}
				o.or = append(o.or, alt)
			}
			continue
		}
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 0 {
				return nil, fmt.Errorf("%w: %s: empty object", ErrPattern, where)
			}
			nested, err := compileObject(x, where)
			if err != nil {
				return nil, err
			}
			o.fields[k] = &field{object: nested}
		case []any:
			if len(x) == 0 {
				return nil, fmt.Errorf("%w: %s: empty array matches nothing", ErrPattern, where)
			}
			f := &field{}
			for i, e := range x {
				mt, err := compileMatcher(e, fmt.Sprintf("%s[%d]", where, i))
				if err != nil {
					return nil, err
				}
				f.matchers = append(f.matchers, mt)
			}
			o.fields[k] = f
		default:
			return nil, fmt.Errorf("%w: %s: want an array of values or an object, got %s", ErrPattern, where, kind(v))
		}
	}
	return o, nil
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	}
	return "an object"
}

// compileMatcher compiles one value of a leaf's array: an exact value or an operator.
func compileMatcher(e any, where string) (matcher, error) {
	op, ok := e.(map[string]any)
	if !ok {
		want := e
		return func(v any, present bool) bool { return present && equal(want, v) }, nil
	}
	if len(op) != 1 {
		return nil, fmt.Errorf("%w: %s: an operator object has exactly one key", ErrPattern, where)
	}
	for name, arg := range op {
		where = where + "." + name
		switch name {
		case "prefix", "suffix":
			test, err := stringTest(name, arg, where)
			if err != nil {
				return nil, err
			}
			return func(v any, present bool) bool { s, ok := v.(string); return present && ok && test(s) }, nil
		case "equals-ignore-case":
			s, ok := arg.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s: want a string", ErrPattern, where)
			}
			return func(v any, present bool) bool { x, ok := v.(string); return present && ok && strings.EqualFold(x, s) }, nil
		case "wildcard":
			s, ok := arg.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s: want a string", ErrPattern, where)
			}
			return func(v any, present bool) bool { x, ok := v.(string); return present && ok && wildcard(s, x) }, nil
		case "exists":
			b, ok := arg.(bool)
			if !ok {
				return nil, fmt.Errorf("%w: %s: want true or false", ErrPattern, where)
			}
			return func(_ any, present bool) bool { return present == b }, nil
		case "numeric":
			return numeric(arg, where)
		case "anything-but":
			return anythingBut(arg, where)
		}
		return nil, fmt.Errorf("%w: %s: operator not supported by the local stack", ErrPattern, where)
	}
	return nil, nil // unreachable
}

// stringTest compiles a prefix or suffix, plain or {"equals-ignore-case": s}.
func stringTest(name string, arg any, where string) (func(string) bool, error) {
	fold := false
	if m, ok := arg.(map[string]any); ok && len(m) == 1 {
		if s, ok := m["equals-ignore-case"]; ok {
			arg, fold = s, true
		}
	}
	s, ok := arg.(string)
	if !ok {
		return nil, fmt.Errorf("%w: %s: want a string", ErrPattern, where)
	}
	has := strings.HasPrefix
	if name == "suffix" {
		has = strings.HasSuffix
	}
	if fold {
		return func(x string) bool { return has(strings.ToLower(x), strings.ToLower(s)) }, nil
	}
	return func(x string) bool { return has(x, s) }, nil
}

// anythingBut matches a present value that none of arg's matches: a value, a list of
// values, or a prefix, suffix, equals-ignore-case or wildcard.
func anythingBut(arg any, where string) (matcher, error) {
	var not matcher
	switch a := arg.(type) {
	case map[string]any:
		m, err := compileMatcher(a, where)
		if err != nil {
			return nil, err
		}
		not = m
	case []any:
		if len(a) == 0 {
			return nil, fmt.Errorf("%w: %s: empty list", ErrPattern, where)
		}
		for _, x := range a {
			if _, ok := x.(map[string]any); ok {
				return nil, fmt.Errorf("%w: %s: a list of values, not operators", ErrPattern, where)
			}
		}
		list := a
		not = func(v any, _ bool) bool {
			for _, x := range list {
				if equal(x, v) {
					return true
				}
			}
			return false
		}
	default:
		want := arg
		not = func(v any, _ bool) bool { return equal(want, v) }
	}
	return func(v any, present bool) bool { return present && !not(v, present) }, nil
}

// numeric compiles ["<op>", n] or ["<op>", n, "<op>", m]: =, <, <=, >, >=.
func numeric(arg any, where string) (matcher, error) {
	list, ok := arg.([]any)
	if !ok || (len(list) != 2 && len(list) != 4) {
		return nil, fmt.Errorf("%w: %s: want [op, number] or [op, number, op, number]", ErrPattern, where)
	}
	type cmp struct {
		op string
		n  float64
	}
	var cs []cmp
	for i := 0; i < len(list); i += 2 {
		op, ok := list[i].(string)
		num, isNum := list[i+1].(json.Number)
		if !ok || !isNum {
			return nil, fmt.Errorf("%w: %s: want an operator and a number", ErrPattern, where)
		}
		n, err := num.Float64()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrPattern, where, err)
		}
		switch op {
		case "=", "<", "<=", ">", ">=":
		default:
			return nil, fmt.Errorf("%w: %s: operator %q", ErrPattern, where, op)
		}
		cs = append(cs, cmp{op, n})
	}
	return func(v any, present bool) bool {
		x, ok := number(v)
		if !present || !ok {
			return false
		}
		for _, c := range cs {
			var hold bool
			switch c.op {
			case "=":
				hold = x == c.n
			case "<":
				hold = x < c.n
			case "<=":
				hold = x <= c.n
			case ">":
				hold = x > c.n
			case ">=":
				hold = x >= c.n
			}
			if !hold {
				return false
			}
		}
		return true
	}, nil
}

func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil && !math.IsInf(f, 0)
}

// equal compares a pattern's exact value with an event's: strings exactly, numbers
// by value, booleans and null as themselves.
func equal(want, got any) bool {
	switch w := want.(type) {
	case string:
		g, ok := got.(string)
		return ok && g == w
	case json.Number:
		a, ok1 := number(w)
		b, ok2 := number(got)
		return ok1 && ok2 && a == b
	case bool:
		g, ok := got.(bool)
		return ok && g == w
	case nil:
		return got == nil
	}
	return false
}

// wildcard matches s against pattern, where * is any run of characters (slashes
// included) and everything else is itself.
func wildcard(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return s == pattern
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// match reports whether the event object ev matches o.
func (o *object) match(ev map[string]any) bool {
	for k, f := range o.fields {
		v, present := ev[k]
		if !f.match(v, present) {
			return false
		}
	}
	if len(o.or) == 0 {
		return true
	}
	for _, alt := range o.or {
		if alt.match(ev) {
			return true
		}
	}
	return false
}

func (f *field) match(v any, present bool) bool {
	if f.object != nil {
		m, ok := v.(map[string]any)
		return present && ok && f.object.match(m)
	}
	if _, isObj := v.(map[string]any); isObj {
		return false
	}
	values := []any{v}
	if arr, ok := v.([]any); ok {
		if len(arr) == 0 {
			present = false
		}
		values = arr
	}
	for _, m := range f.matchers {
		if !present {
			if m(nil, false) {
				return true
			}
			continue
		}
		for _, x := range values {
			if m(x, true) {
				return true
			}
		}
	}
	return false
}
