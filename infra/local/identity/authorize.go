package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Request is one authorisation question an emulator asks about a call it received:
// may Principal perform Action on Resource, given the request's condition context?
// Emulators derive Action, Resource and Context as their service documents them.
type Request struct {
	Principal *Principal
	// Action is service:Operation, as IAM names it ("dynamodb:GetItem").
	Action string
	// Resource is the ARN the action is authorised against ("*" for actions without
	// a resource type).
	Resource string
	// Context holds the request's own condition keys (dynamodb:LeadingKeys,
	// s3:prefix, ecs:cluster, iam:PassedToService …); the principal's keys
	// (aws:PrincipalTag/…, aws:PrincipalArn …) are added by the Authorizer.
	Context map[string][]string
	// ResourcePolicy is the resource's own policy, when the service has one.
	ResourcePolicy json.RawMessage
}

// Authorizer decides Requests: nil allows; a *DeniedError denies; ErrUnsupported
// means the evaluator met a construct it cannot decide, which is refused too.
type Authorizer interface {
	Authorize(ctx context.Context, r Request) error
}

// AuthorizerFunc adapts a function to an Authorizer.
type AuthorizerFunc func(ctx context.Context, r Request) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, r Request) error { return f(ctx, r) }

// ErrDenied matches every *DeniedError.
var ErrDenied = errors.New("access denied")

// ErrUnsupported: the policy evaluator cannot decide the request (a construct or
// action it does not support); the local stack refuses rather than guess.
var ErrUnsupported = errors.New("unsupported by the local stack")

// DeniedError is a denial.
type DeniedError struct {
	Principal string // the caller's ARN
	Action    string
	Resource  string
	// Explicit reports an explicit Deny statement; otherwise nothing allowed it.
	Explicit bool
	// Statement names the deciding statement, when one decided.
	Statement string
}

func (e *DeniedError) Error() string {
	why := "because no identity-based policy allows the " + e.Action + " action"
	if e.Explicit {
		why = "with an explicit deny in an identity-based policy"
	}
	return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", e.Principal, e.Action, e.Resource, why)
}

// Is matches ErrDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// UnsupportedError is a request the evaluator could not decide.
type UnsupportedError struct {
	Action, Resource string
	Detail           string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unsupported by the local stack: %s on %s: %s", e.Action, e.Resource, e.Detail)
}

// Is matches ErrUnsupported.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// PrincipalContext returns the global condition keys of p (aws:PrincipalArn,
// aws:PrincipalTag/<key>, aws:userid …), as AWS sets them for every request p signs.
func PrincipalContext(p *Principal) map[string][]string {
	c := map[string][]string{
		"aws:PrincipalArn":     {p.ARN},
		"aws:PrincipalAccount": {p.Account},
		"aws:userid":           {p.UserID},
		"aws:PrincipalType":    {"User"},
	}
	if p.Role != nil {
		c["aws:PrincipalArn"] = []string{p.Role.ARN}
		c["aws:PrincipalType"] = []string{"AssumedRole"}
		c["aws:RoleSessionName"] = []string{p.SessionName}
	} else {
		c["aws:username"] = []string{p.SessionName}
	}
	if len(p.Tags) > 0 {
		keys := make([]string, 0, len(p.Tags))
		for k, v := range p.Tags {
			c["aws:PrincipalTag/"+k] = []string{v}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		c["aws:PrincipalTagKeys"] = keys
	}
	if p.SourceIdentity != "" {
		c["aws:SourceIdentity"] = []string{p.SourceIdentity}
	}
	if !p.Issued.IsZero() && p.Role != nil {
		c["aws:TokenIssueTime"] = []string{p.Issued.UTC().Format("2006-01-02T15:04:05Z")}
	}
	return c
}
