package lambdart

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// What Lambda does with a function's execution role, when Runtime.Sessions is set:
// it assumes the role for each execution environment, writes the environment's logs
// with it and, for a VPC function, manages network interfaces with it.

// Errors Add returns, as Lambda refuses to create such a function
// (InvalidParameterValueException); each wraps the refusal behind it.
var (
	// ErrNoRole: Sessions is set and the function names no execution role.
	ErrNoRole = errors.New("the function has no execution role")
	// ErrRoleTrust: Lambda may not assume the function's role (its trust policy).
	ErrRoleTrust = errors.New("The role defined for the function cannot be assumed by Lambda.")
	// ErrVPCPermissions: a VPC function's role may not manage network interfaces.
	ErrVPCPermissions = errors.New("The provided execution role does not have permissions to call CreateNetworkInterface on EC2")
)

// Log keys of the runtime's lines about roles.
const (
	keyLogGroup  = "logGroup"
	keyPrincipal = "principal"
)

func (r *Runtime) env() iampolicy.Env {
	return iampolicy.Env{Region: r.Region, Account: r.AccountID}
}

func (r *Runtime) sessionDuration() time.Duration {
	if r.SessionDuration > 0 {
		return r.SessionDuration
	}
	return DefaultSessionDuration
}

// margin is how long a process's credentials must still be valid for it to take an
// invocation: CredentialMargin, or the function's timeout when that is longer.
func (r *Runtime) margin(fn Function) time.Duration {
	m := r.CredentialMargin
	if m <= 0 {
		m = DefaultCredentialMargin
	}
	return max(m, fn.Timeout)
}

// checkRole is what Lambda checks of the role when a function is created: that it may
// assume it and, for a VPC function, that the role may manage network interfaces.
func (r *Runtime) checkRole(fn Function) error {
	if r.Sessions == nil {
		return nil
	}
	if fn.Role == "" {
		return ErrNoRole
	}
	if d, m := r.sessionDuration(), r.margin(fn); d <= m {
		return fmt.Errorf("a session of %s expires before the credential margin of %s", d, m)
	}
	_, p, err := r.Sessions.IssueForService(r.ctx, iampolicy.LambdaService, fn.Role, fn.Name, r.sessionDuration())
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrRoleTrust, err)
	}
	if fn.InVPC && r.Authorizer != nil {
		eni := "eni-" + randomHex(9)[:17]
		if err := iampolicy.AuthorizeAll(r.ctx, r.Authorizer, p, iampolicy.LambdaNetworkInterfaces(r.env(), eni, nil, nil)); err != nil {
			return fmt.Errorf("%w (%v)", ErrVPCPermissions, err)
		}
	}
	return nil
}

// session is what one process runs with: its credentials and whether its output may
// be written.
type session struct {
	creds identity.Credentials
	// logs is false when the role may not write the process's log stream.
	logs bool
}

// newSession issues the session a new process of p runs with (nothing without
// Sessions) and authorises its log writes to stream.
func (p *pool) newSession(ctx context.Context, stream string) (session, error) {
	rt := p.rt
	if rt.Sessions == nil {
		return session{logs: true}, nil
	}
	c, principal, err := rt.Sessions.IssueForService(ctx, iampolicy.LambdaService, p.fn.Role, p.fn.Name, rt.sessionDuration())
	if err != nil {
		return session{}, fmt.Errorf("assume the execution role: %w", err)
	}
	if !c.Expires.IsZero() && !p.outlasts(c.Expires) {
		return session{}, fmt.Errorf("a new session expires at %s, within the credential margin of %s", c.Expires.UTC().Format(time.RFC3339), rt.margin(p.fn))
	}
	s := session{creds: c, logs: true}
	if rt.Authorizer != nil {
		group := p.fn.logGroup()
		if err := iampolicy.AuthorizeAll(ctx, rt.Authorizer, principal, iampolicy.LogsWrite(rt.env(), group, stream)); err != nil {
			// As in AWS: the function runs, its logs are lost.
			p.log.Warn("the execution role may not write the function's logs: its output is dropped",
				keyLogGroup, group, keyPrincipal, principal.ARN, logging.Error, err.Error())
			s.logs = false
		}
	}
	return s, nil
}

// outlasts reports whether credentials expiring at expires may still take an
// invocation now.
func (p *pool) outlasts(expires time.Time) bool {
	return expires.IsZero() || expires.Sub(p.rt.now()) > p.rt.margin(p.fn)
}
