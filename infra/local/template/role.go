package template

import (
	"encoding/json"
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"
)

// TypeRole is the IAM role resource the local stack issues sessions of.
const TypeRole = "AWS::IAM::Role"

// Role is one AWS::IAM::Role, its documents resolved: what a session of it may do and
// who may assume it.
type Role struct {
	LogicalID string
	// RoleName is the RoleName property; empty when CloudFormation names the role.
	RoleName string
	// Trust is AssumeRolePolicyDocument as JSON.
	Trust json.RawMessage
	// Policies are the inline policies, in template order.
	Policies []InlinePolicy
	// ManagedPolicyArns are attached managed policies (their documents are AWS's, not
	// the template's).
	ManagedPolicyArns []string
	// MaxSessionDuration is MaxSessionDuration in seconds, 0 when unset (1 hour).
	MaxSessionDuration int
}

// InlinePolicy is one entry of a role's Policies.
type InlinePolicy struct {
	Name     string
	Document json.RawMessage
}

// readRoles reads every role the template's conditions keep.
func (e *evaluator) readRoles() (map[string]*Role, error) {
	rs, err := e.ofType(TypeRole, nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Role, len(rs))
	for _, r := range rs {
		role, err := e.readRole(r)
		if err != nil {
			return nil, err
		}
		out[r.LogicalID] = role
	}
	return out, nil
}

func (e *evaluator) readRole(r *Resource) (*Role, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	role := &Role{LogicalID: r.LogicalID}
	var err error
	if role.RoleName, err = e.optStr(r.Properties, "RoleName", base); err != nil {
		return nil, err
	}
	if role.MaxSessionDuration, err = e.optPosInt(r.Properties, "MaxSessionDuration", base, 0); err != nil {
		return nil, err
	}
	if role.Trust, err = e.document(Lookup(r.Properties, "AssumeRolePolicyDocument"), base+".AssumeRolePolicyDocument"); err != nil {
		return nil, err
	}
	if role.Trust == nil {
		return nil, pathErrf(base+".AssumeRolePolicyDocument", ErrInvalid, "a role needs a trust policy")
	}
	if n := Lookup(r.Properties, "ManagedPolicyArns"); n != nil {
		v, err := e.eval(n, base+".ManagedPolicyArns")
		if err != nil {
			return nil, err
		}
		list, ok := v.([]any)
		if !ok && v != noValue {
			return nil, pathErrf(base+".ManagedPolicyArns", ErrInvalid, "want a list")
		}
		for i, a := range list {
			s, ok := a.(string)
			if !ok {
				return nil, pathErrf(fmt.Sprintf("%s.ManagedPolicyArns[%d]", base, i), ErrInvalid, "want an ARN")
			}
			role.ManagedPolicyArns = append(role.ManagedPolicyArns, s)
		}
	}
	pols := deref(Lookup(r.Properties, "Policies"))
	if pols == nil {
		return role, nil
	}
	if pols.Kind != yaml.SequenceNode {
		return nil, pathErrf(base+".Policies", ErrInvalid, "want a list of policies")
	}
	for i, n := range pols.Content {
		path := fmt.Sprintf("%s.Policies[%d]", base, i)
		v, err := e.eval(n, path)
		if err != nil {
			return nil, err
		}
		if v == noValue {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, pathErrf(path, ErrInvalid, "want a PolicyName and a PolicyDocument")
		}
		name, _ := m["PolicyName"].(string)
		doc, ok := m["PolicyDocument"].(map[string]any)
		if name == "" || !ok {
			return nil, pathErrf(path, ErrInvalid, "want a PolicyName and a PolicyDocument")
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return nil, pathErrf(path, ErrInvalid, "policy document: %v", err)
		}
		role.Policies = append(role.Policies, InlinePolicy{Name: name, Document: b})
	}
	return role, nil
}

// document evaluates a policy document node to JSON (nil when absent).
func (e *evaluator) document(n *yaml.Node, path string) (json.RawMessage, error) {
	if n == nil {
		return nil, nil
	}
	v, err := e.eval(n, path)
	if err != nil {
		return nil, err
	}
	if v == noValue || v == nil {
		return nil, nil
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, pathErrf(path, ErrInvalid, "want a policy document")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, pathErrf(path, ErrInvalid, "policy document: %v", err)
	}
	return b, nil
}

// RoleIDs returns the roles' logical ids, sorted.
func (t *Template) RoleIDs() []string {
	ids := make([]string, 0, len(t.Roles))
	for id := range t.Roles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
