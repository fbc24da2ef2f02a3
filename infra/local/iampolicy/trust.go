package iampolicy

import (
	"context"
	"errors"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stslocal"
)

// Service principals that assume the template's roles.
const (
	LambdaService    = "lambda.amazonaws.com"
	ECSTasksService  = "ecs-tasks.amazonaws.com"
	SchedulerService = "scheduler.amazonaws.com"
)

// TrustPolicyName names a role's trust policy in decisions and the Recorder.
func TrustPolicyName(role *identity.Role) string { return role.Name + "/AssumeRolePolicyDocument" }

// TrustRequest is one AssumeRole to decide by the role's trust policy.
type TrustRequest struct {
	Role *identity.Role
	// Caller is the role session or user calling AssumeRole; nil when Service (an AWS
	// service principal such as LambdaService) assumes the role.
	Caller  *identity.Principal
	Service string
	// SourceAccount is aws:SourceAccount for a Service: the account on whose behalf
	// the service acts (the role's account when empty).
	SourceAccount string
	// Region is aws:RequestedRegion (left out when empty).
	Region      string
	SessionName string
	// Tags are session tags (sts:TagSession is needed too); TransitiveTagKeys name
	// the ones that pass on.
	Tags              map[string]string
	TransitiveTagKeys []string
	// SourceIdentity, or the caller's, needs sts:SetSourceIdentity too.
	SourceIdentity string
	// SecureTransport is aws:SecureTransport: true only over TLS.
	SecureTransport bool
}

// Trust decides an AssumeRole: sts:AssumeRole on the role, plus sts:TagSession when
// tags are set and sts:SetSourceIdentity when a source identity is, each judged by
// the role's trust policy as the resource policy and, for a caller, by the caller's
// own policies. It answers like Authorize: nil, *identity.DeniedError,
// *identity.UnsupportedError.
func (e *Evaluator) Trust(ctx context.Context, t TrustRequest) error {
	if t.Role == nil {
		return errors.New("trust: no role")
	}
	if (t.Caller == nil) == (t.Service == "") {
		return errors.New("trust: exactly one of Caller and Service")
	}
	source := t.SourceIdentity
	if source == "" && t.Caller != nil {
		source = t.Caller.SourceIdentity
	}
	env := Env{Region: t.Region}
	reqs := AssumeRoleRequests(env, t.Role.ARN, t.SessionName, t.Tags, t.TransitiveTagKeys, source, t.SecureTransport)
	roleAccount := resourceAccount(t.Role.ARN, "")
	for _, r := range reqs {
		w := wireRequest{Action: r.Action, Resource: r.Resource, Account: roleAccount, ResourcePolicy: t.Role.Trust}
		var name, recordAs string
		roles := []*identity.Role{t.Role}
		if t.Caller != nil {
			p := t.Caller
			w.Principal, name, recordAs = p.ARN, p.ARN, principalKey(p)
			roles = append(roles, p.Role)
			w.SessionPolicy = p.SessionPolicy
			w.Context = merge(identity.PrincipalContext(p), r.Context)
			for _, pol := range p.Policies() {
				w.IdentityPolicies = append(w.IdentityPolicies, wirePolicy{Name: pol.Name, Policy: pol.Document})
			}
		} else {
			acct := t.SourceAccount
			if acct == "" {
				acct = roleAccount
			}
			w.Principal, name, recordAs = t.Service, t.Service, t.Service
			w.Context = merge(map[string][]string{
				"aws:SourceAccount":         {acct},
				"aws:PrincipalServiceName":  {t.Service},
				"aws:PrincipalIsAWSService": {"true"},
			}, r.Context)
		}
		d, err := e.decideWire(ctx, w, TrustPolicyName(t.Role))
		if err := e.conclude(ctx, name, recordAs, r.Action, r.Resource, d, err, roles...); err != nil {
			return err
		}
	}
	return nil
}

// STSTrust adapts Trust to the STS emulator's trust hook: a caller's AssumeRole
// through stslocal, in env's region, over plain HTTP.
func (e *Evaluator) STSTrust(ctx context.Context, env Env) stslocal.Trust {
	return func(r stslocal.TrustRequest) error {
		return e.Trust(ctx, TrustRequest{Role: r.Role, Caller: r.Caller, Region: env.Region,
			Tags: r.Tags, SourceIdentity: r.SourceIdentity})
	}
}
