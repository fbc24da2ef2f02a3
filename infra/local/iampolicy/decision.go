package iampolicy

import (
	"encoding/json"
	"strings"
)

// Result is iam-simulate's overall result for one request.
type Result string

// The three results IAM's evaluation logic ends in.
const (
	Allowed          Result = "Allowed"
	ExplicitlyDenied Result = "ExplicitlyDenied"
	ImplicitlyDenied Result = "ImplicitlyDenied"
)

// Policy types a statement can come from.
const (
	IdentityPolicy = "identity"
	SessionPolicy  = "session"
	ResourcePolicy = "resource"
)

// StatementRef names one statement: the policy it is in and its Sid, or its 1-based
// index in the policy when it has no Sid.
type StatementRef struct {
	// PolicyType is IdentityPolicy, SessionPolicy or ResourcePolicy.
	PolicyType string `json:"policyType"`
	// Policy is the policy's name: an identity.Policy's Name, "SessionPolicy", or
	// the resource policy's name (TrustPolicyName for a role's trust policy).
	Policy string `json:"policyId"`
	// Statement is the Sid, or the 1-based index of the statement.
	Statement string `json:"statement"`
}

// String names the statement as "<policy>#<statement>".
func (s StatementRef) String() string { return s.Policy + "#" + s.Statement }

// NearStatement is an Allow statement whose action matched a denied request but
// whose resource or condition did not: the statement that would have allowed it.
type NearStatement struct {
	StatementRef
	ResourceMatch  bool `json:"resourceMatch"`
	ConditionMatch bool `json:"conditionMatch"`
	// FailedConditions are the conditions that did not hold, as "Operator key".
	FailedConditions []string `json:"failedConditions"`
}

// Mismatch says what of the statement did not match: "resource", "condition
// (…)", both, or "resource or condition" when the simulator kept no explanation.
func (n NearStatement) Mismatch(unexplained bool) string {
	if unexplained {
		return "resource or condition (not explained for a wildcard resource)"
	}
	var parts []string
	if !n.ResourceMatch {
		parts = append(parts, "resource")
	}
	if !n.ConditionMatch {
		c := "condition"
		if len(n.FailedConditions) > 0 {
			c += " (" + strings.Join(n.FailedConditions, "; ") + ")"
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return "none (another policy blocked it)"
	}
	return strings.Join(parts, " and ")
}

// Decision is iam-simulate's answer to one request.
type Decision struct {
	Result Result
	// Allowing are the Allow statements that matched, from every policy type;
	// Denying the Deny statements that matched.
	Allowing, Denying []StatementRef
	// Nearest are the Allow statements whose action matched but whose resource or
	// condition did not.
	Nearest []NearStatement
	// IgnoredContextKeys are keys of the request's context that iam-simulate dropped
	// because the action does not support them.
	IgnoredContextKeys []string
	// Unexplained: the decision stands but iam-simulate kept no analysis of it (an
	// implicitly denied request for a resource containing "*"); Nearest lists the
	// statements whose action matches.
	Unexplained bool
}

// Allowed reports an Allowed result.
func (d *Decision) Allowed() bool { return d.Result == Allowed }

// IdentityAllowing returns the identity-policy statements among Allowing.
func (d *Decision) IdentityAllowing() []StatementRef { return ofType(d.Allowing, IdentityPolicy) }

func ofType(refs []StatementRef, typ string) []StatementRef {
	var out []StatementRef
	for _, r := range refs {
		if r.PolicyType == typ {
			out = append(out, r)
		}
	}
	return out
}

// wirePolicy is one named policy document for the simulator.
type wirePolicy struct {
	Name   string          `json:"name"`
	Policy json.RawMessage `json:"policy"`
}

// wireRequest is one simulation, as simulate.mjs reads it (without its id).
type wireRequest struct {
	Principal        string              `json:"principal"`
	Action           string              `json:"action"`
	Resource         string              `json:"resource"`
	Account          string              `json:"account"`
	IdentityPolicies []wirePolicy        `json:"identityPolicies"`
	SessionPolicy    json.RawMessage     `json:"sessionPolicy,omitempty"`
	ResourcePolicy   json.RawMessage     `json:"resourcePolicy,omitempty"`
	Context          map[string][]string `json:"context"`
}

// wireAnswer is one line simulate.mjs writes.
type wireAnswer struct {
	ID      uint64 `json:"id"`
	Ready   bool   `json:"ready"`
	Version string `json:"version"`
	Fatal   string `json:"fatal"`

	Result             Result          `json:"result"`
	Allowing           []StatementRef  `json:"allowing"`
	Denying            []StatementRef  `json:"denying"`
	Nearest            []NearStatement `json:"nearest"`
	IgnoredContextKeys []string        `json:"ignoredContextKeys"`
	Unexplained        bool            `json:"unexplained"`
	Error              string          `json:"error"`
}

func (a *wireAnswer) decision(resourcePolicyName string) *Decision {
	// Copies: the answer is shared by every caller the cache serves.
	d := &Decision{Result: a.Result, Unexplained: a.Unexplained,
		Allowing:           append([]StatementRef(nil), a.Allowing...),
		Denying:            append([]StatementRef(nil), a.Denying...),
		Nearest:            append([]NearStatement(nil), a.Nearest...),
		IgnoredContextKeys: append([]string(nil), a.IgnoredContextKeys...)}
	if resourcePolicyName == "" {
		return d
	}
	for i := range d.Allowing {
		if d.Allowing[i].PolicyType == ResourcePolicy {
			d.Allowing[i].Policy = resourcePolicyName
		}
	}
	for i := range d.Denying {
		if d.Denying[i].PolicyType == ResourcePolicy {
			d.Denying[i].Policy = resourcePolicyName
		}
	}
	for i := range d.Nearest {
		if d.Nearest[i].PolicyType == ResourcePolicy {
			d.Nearest[i].Policy = resourcePolicyName
		}
	}
	return d
}
