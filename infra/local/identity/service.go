package identity

import (
	"context"
	"fmt"
	"time"
)

// SessionIssuer issues the role sessions an AWS service creates for what it runs:
// Lambda for a function's execution role, ECS for a task's task and execution roles,
// the scheduler for a schedule's role. Emulators of those services take one.
type SessionIssuer interface {
	// IssueForService assumes roleARN as service (a service principal such as
	// "lambda.amazonaws.com") with sessionName, for d (DefaultSessionDuration when
	// zero). The role's trust policy must allow the service.
	IssueForService(ctx context.Context, service, roleARN, sessionName string, d time.Duration) (Credentials, *Principal, error)
}

// ServiceTrust decides whether service may assume role (its trust policy); nil allows.
type ServiceTrust func(ctx context.Context, role *Role, service string) error

// ServiceIssuer is the SessionIssuer over an Authority, with the trust decision made
// by Trust (nil: every service may assume every role).
type ServiceIssuer struct {
	Authority *Authority
	Trust     ServiceTrust
}

// IssueForService implements SessionIssuer.
func (s ServiceIssuer) IssueForService(ctx context.Context, service, roleARN, sessionName string, d time.Duration) (Credentials, *Principal, error) {
	role, ok := s.Authority.Role(roleARN)
	if !ok {
		return Credentials{}, nil, fmt.Errorf("%s cannot assume %s: no such role", service, roleARN)
	}
	if s.Trust != nil {
		if err := s.Trust(ctx, role, service); err != nil {
			return Credentials{}, nil, fmt.Errorf("%s cannot assume %s: %w", service, roleARN, err)
		}
	}
	return s.Authority.Issue(SessionSpec{RoleARN: roleARN, SessionName: sessionName, Duration: d})
}
