package iampolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// SuppliedKeys are the condition keys the local stack supplies, in lower case; an
// entry ending in "/" stands for every key with that prefix. A policy conditioned on
// any other key would be evaluated as if the key were absent, which a Deny … IfExists
// or a Null check turns into a silent allow: CheckPolicies refuses such policies.
var SuppliedKeys = []string{
	// The principal's, set by identity.PrincipalContext for every request.
	"aws:principalarn", "aws:principalaccount", "aws:principaltype", "aws:userid", "aws:username",
	"aws:principaltag/", "aws:sourceidentity", "aws:tokenissuetime",
	// Global keys the derivations set.
	"aws:requestedregion", "aws:securetransport",
	// A service principal's, set by Evaluator.Trust.
	"aws:sourceaccount", "aws:principalservicename", "aws:principalisawsservice",
	// Tags passed in a request (RunTask, AssumeRole).
	"aws:requesttag/", "aws:tagkeys",
	"dynamodb:leadingkeys", "dynamodb:attributes", "dynamodb:select", "dynamodb:returnvalues",
	"dynamodb:returnconsumedcapacity", "dynamodb:enclosingoperation",
	"s3:prefix", "s3:delimiter", "s3:max-keys", "s3:authtype", "s3:signatureversion",
	"s3:x-amz-content-sha256", "s3:resourceaccount", "s3:x-amz-acl", "s3:x-amz-server-side-encryption",
	"s3:x-amz-storage-class", "s3:x-amz-copy-source", "s3:x-amz-metadata-directive",
	"s3:if-none-match", "s3:if-match",
	"ecs:cluster", "ecs:createaction", "iam:passedtoservice",
	"lambda:functionurlauthtype", "lambda:invokedviafunctionurl",
	"sts:rolesessionname", "sts:sourceidentity", "sts:transitivetagkeys",
	"secretsmanager:secretid", "secretsmanager:versionstage", "secretsmanager:versionid", "secretsmanager:name",
	"ec2:region",
}

// conditionOperators are the base operators iam-simulate evaluates, in lower case.
var conditionOperators = map[string]bool{}

func init() {
	for _, op := range []string{"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase",
		"StringNotEqualsIgnoreCase", "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals",
		"NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals",
		"DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
		"DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals",
		"ArnLike", "ArnNotEquals", "ArnNotLike", "Null"} {
		conditionOperators[strings.ToLower(op)] = true
	}
}

// Supplied reports whether the local stack ever supplies condition key k.
func Supplied(k string) bool {
	k = strings.ToLower(k)
	for _, s := range SuppliedKeys {
		if k == s || (strings.HasSuffix(s, "/") && strings.HasPrefix(k, s) && len(k) > len(s)) {
			return true
		}
	}
	return false
}

// CheckRoles runs CheckPolicies on every identity policy and the trust policy of
// each role.
func CheckRoles(roles ...*identity.Role) error {
	var ps []identity.Policy
	for _, r := range roles {
		ps = append(ps, r.Policies...)
		if len(r.Trust) > 0 {
			ps = append(ps, identity.Policy{Name: TrustPolicyName(r), Document: r.Trust})
		}
	}
	return CheckPolicies(ps...)
}

// CheckPolicies refuses what the local stack cannot evaluate faithfully: a condition
// key it never supplies (aws:SourceIp, aws:SourceVpce, aws:CurrentTime …, including
// one named in a ${…} policy variable), or a condition operator iam-simulate does not
// evaluate. It returns nil, one *identity.UnsupportedError, or several joined; the
// stack refuses to start rather than mis-evaluate.
func CheckPolicies(policies ...identity.Policy) error {
	var errs []error
	for _, p := range policies {
		var doc struct {
			Statement json.RawMessage
		}
		if err := json.Unmarshal(p.Document, &doc); err != nil {
			errs = append(errs, &identity.UnsupportedError{Action: "policy", Resource: p.Name, Detail: "not a JSON policy: " + err.Error()})
			continue
		}
		var stmts []map[string]json.RawMessage
		if len(doc.Statement) > 0 && doc.Statement[0] == '{' {
			var one map[string]json.RawMessage
			if err := json.Unmarshal(doc.Statement, &one); err == nil {
				stmts = append(stmts, one)
			}
		} else if len(doc.Statement) > 0 {
			if err := json.Unmarshal(doc.Statement, &stmts); err != nil {
				errs = append(errs, &identity.UnsupportedError{Action: "policy", Resource: p.Name, Detail: "Statement is neither an object nor a list"})
				continue
			}
		}
		for i, st := range stmts {
			ref := StatementRef{Policy: p.Name, Statement: fmt.Sprint(i + 1)}
			var sid string
			if json.Unmarshal(st["Sid"], &sid) == nil && sid != "" {
				ref.Statement = sid
			}
			for _, problem := range checkStatement(st) {
				errs = append(errs, &identity.UnsupportedError{Action: actionsOf(st), Resource: ref.String(), Detail: problem})
			}
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func checkStatement(st map[string]json.RawMessage) []string {
	var problems []string
	var strs []string // strings that may hold ${…} policy variables
	for _, field := range []string{"Resource", "NotResource"} {
		strs = append(strs, stringList(st[field])...)
	}
	if raw, ok := st["Condition"]; ok {
		var cond map[string]map[string]json.RawMessage
		if err := json.Unmarshal(raw, &cond); err != nil {
			return append(problems, "Condition is not an object of operators")
		}
		for _, op := range sortedKeys(cond) {
			if msg := checkOperator(op); msg != "" {
				problems = append(problems, msg)
			}
			for _, key := range sortedKeys(cond[op]) {
				if !Supplied(key) {
					problems = append(problems, fmt.Sprintf("condition key %s is never supplied by the local stack (%s)", key, op))
				}
				strs = append(strs, stringList(cond[op][key])...)
			}
		}
	}
	for _, s := range strs {
		for _, v := range policyVariables(s) {
			if !Supplied(v) {
				problems = append(problems, fmt.Sprintf("policy variable ${%s} names a key the local stack never supplies", v))
			}
		}
	}
	return dedupe(problems)
}

// checkOperator validates a condition operator: [ForAllValues:|ForAnyValue:]Base[IfExists].
func checkOperator(op string) string {
	base := op
	set := false
	if prefix, rest, ok := strings.Cut(op, ":"); ok {
		switch strings.ToLower(prefix) {
		case "forallvalues", "foranyvalue":
			base, set = rest, true
		default:
			return fmt.Sprintf("condition operator %s has an unknown set operator", op)
		}
	}
	lower := strings.ToLower(base)
	ifExists := strings.HasSuffix(lower, "ifexists")
	if ifExists {
		lower = strings.TrimSuffix(lower, "ifexists")
	}
	switch {
	case !conditionOperators[lower]:
		return fmt.Sprintf("condition operator %s is not one iam-simulate evaluates", op)
	case lower == "null" && (ifExists || set):
		return fmt.Sprintf("condition operator %s: Null takes neither IfExists nor a set operator", op)
	}
	return ""
}

// policyVariables returns the keys named by ${…} in s (not ${*}, ${?}, ${$}), without
// a default value.
func policyVariables(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return out
		}
		name := s[i+2 : i+j]
		s = s[i+j+1:]
		switch name {
		case "*", "?", "$":
			continue
		}
		name, _, _ = strings.Cut(name, ",")
		out = append(out, strings.TrimSpace(name))
	}
}

// stringList reads a JSON string, number, boolean or list of them as strings.
func stringList(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var one any
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil
	}
	list, ok := one.([]any)
	if !ok {
		list = []any{one}
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		} else {
			out = append(out, fmt.Sprint(v))
		}
	}
	return out
}

func actionsOf(st map[string]json.RawMessage) string {
	a := stringList(st["Action"])
	if len(a) == 0 {
		if na := stringList(st["NotAction"]); len(na) > 0 {
			return "NotAction " + strings.Join(na, ",")
		}
		return "(no action)"
	}
	sort.Strings(a)
	return strings.Join(a, ",")
}
