package identity

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Limits STS applies to sessions, which the stack applies to every session it issues.
const (
	MinSessionDuration = 15 * time.Minute
	// DefaultSessionDuration is AssumeRole's default and a role's default maximum.
	DefaultSessionDuration = time.Hour
	// ChainedSessionLimit is the longest session a role session may assume (role chaining).
	ChainedSessionLimit = time.Hour
	// MaxSessionTags is the number of session tags AssumeRole accepts.
	MaxSessionTags = 50
	// MaxSessionPolicyBytes bounds a session policy (AWS bounds its packed form; the
	// compact JSON is a close, stricter stand-in).
	MaxSessionPolicyBytes = 2048
)

// Policy is one identity policy document attached to a role or user. Name is unique
// within the stack ("ConnectRole/connect"): the evaluator reports statements by it.
type Policy struct {
	Name     string
	Document json.RawMessage
}

// Role is an IAM role: its trust policy decides who may assume it, its policies what a
// session of it may do.
type Role struct {
	// Name is the role's name; LogicalID the template resource that defines it.
	Name      string
	LogicalID string
	// ARN is arn:aws:iam::<account>:role/<Name>, set by AddRole.
	ARN string
	// ID is the role's unique id (AROA…), set by AddRole.
	ID       string
	Trust    json.RawMessage
	Policies []Policy
	// MaxSession bounds its sessions (DefaultSessionDuration when zero).
	MaxSession time.Duration
}

// Principal is who signed a request: a role session or a user.
type Principal struct {
	Account string
	// ARN is the session's arn:aws:sts::<account>:assumed-role/<role>/<session>, or the
	// user's arn:aws:iam::<account>:user/<name>.
	ARN string
	// UserID is aws:userid: "<role id>:<session name>" for a session, the user's id
	// for a user.
	UserID string
	// Role is the assumed role; nil for a user.
	Role *Role
	// SessionName is the role session name (a task's id, a function's name).
	SessionName string
	// Tags are the session tags (aws:PrincipalTag/<key>); TransitiveTagKeys those that
	// pass on to sessions this one assumes.
	Tags              map[string]string
	TransitiveTagKeys []string
	// SessionPolicy, when set, bounds the session to the intersection with the role's.
	SessionPolicy json.RawMessage
	// SourceIdentity is kept across role chaining and cannot change.
	SourceIdentity string
	// Chained reports a session assumed by another role session.
	Chained bool
	// Issued and Expires bound the session; zero Expires never expires (a user's key).
	Issued, Expires time.Time
	// UserPolicies are a user's policies (nil for a role session).
	UserPolicies []Policy
}

// Policies returns the identity policies the principal's requests are judged by.
func (p *Principal) Policies() []Policy {
	if p.Role != nil {
		return p.Role.Policies
	}
	return p.UserPolicies
}

// Name names the principal in logs: role/session or user.
func (p *Principal) Name() string {
	if p.Role != nil {
		return p.Role.Name + "/" + p.SessionName
	}
	return p.SessionName
}

// Credentials are what a session or user signs with.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// SessionToken is empty for a user's long-term key.
	SessionToken string
	// Expires is zero for a user's long-term key.
	Expires time.Time
}

// Env returns the credentials as the AWS_* variables every SDK reads.
func (c Credentials) Env() map[string]string {
	env := map[string]string{"AWS_ACCESS_KEY_ID": c.AccessKeyID, "AWS_SECRET_ACCESS_KEY": c.SecretAccessKey}
	if c.SessionToken != "" {
		env["AWS_SESSION_TOKEN"] = c.SessionToken
	}
	return env
}

type key struct {
	secret, token string
	principal     *Principal
}

// Authority holds the stack's roles, users and issued credentials. Safe for concurrent use.
type Authority struct {
	Account, Region string
	// Now is the clock sessions and signatures are judged by (time.Now when nil).
	Now func() time.Time

	mu    sync.RWMutex
	roles map[string]*Role // by ARN
	keys  map[string]*key  // by access key id
}

// New returns an Authority for account and region with no roles.
func New(account, region string) *Authority {
	return &Authority{Account: account, Region: region, roles: map[string]*Role{}, keys: map[string]*key{}}
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// RoleARN returns the ARN of the role named name in a's account.
func (a *Authority) RoleARN(name string) string {
	return "arn:aws:iam::" + a.Account + ":role/" + name
}

var roleName = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)

// AddRole registers r (its ARN and ID are set here) and returns it.
func (a *Authority) AddRole(r Role) (*Role, error) {
	if !roleName.MatchString(r.Name) {
		return nil, fmt.Errorf("add role: invalid role name %q", r.Name)
	}
	if len(r.Trust) > 0 && !json.Valid(r.Trust) {
		return nil, fmt.Errorf("add role %s: trust policy is not JSON", r.Name)
	}
	for _, p := range r.Policies {
		if !json.Valid(p.Document) {
			return nil, fmt.Errorf("add role %s: policy %s is not JSON", r.Name, p.Name)
		}
	}
	r.ARN = a.RoleARN(r.Name)
	r.ID = "AROA" + randomID(17)
	if r.MaxSession == 0 {
		r.MaxSession = DefaultSessionDuration
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.roles[r.ARN]; dup {
		return nil, fmt.Errorf("add role: %s exists", r.Name)
	}
	role := r
	a.roles[r.ARN] = &role
	return &role, nil
}

// Role returns the role with arn.
func (a *Authority) Role(arn string) (*Role, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	r, ok := a.roles[arn]
	return r, ok
}

// Roles returns every role, by name.
func (a *Authority) Roles() []*Role {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]*Role, 0, len(a.roles))
	for _, r := range a.roles {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AddUser creates a user with a long-term key (AKIA…) and policies: an operator.
func (a *Authority) AddUser(name string, policies []Policy) (Credentials, *Principal, error) {
	if !roleName.MatchString(name) {
		return Credentials{}, nil, fmt.Errorf("add user: invalid user name %q", name)
	}
	p := &Principal{Account: a.Account, ARN: "arn:aws:iam::" + a.Account + ":user/" + name,
		UserID: "AIDA" + randomID(17), SessionName: name, Issued: a.now(), UserPolicies: policies}
	c := Credentials{AccessKeyID: "AKIA" + randomID(16), SecretAccessKey: randomSecret()}
	a.mu.Lock()
	a.keys[c.AccessKeyID] = &key{secret: c.SecretAccessKey, principal: p}
	a.mu.Unlock()
	return c, p, nil
}

// SessionSpec describes a session to issue.
type SessionSpec struct {
	RoleARN     string
	SessionName string
	// Duration is the session's length (DefaultSessionDuration when zero).
	Duration time.Duration
	Tags     map[string]string
	// TransitiveTagKeys must name keys of Tags.
	TransitiveTagKeys []string
	// Policy is a session policy (JSON), or nil.
	Policy         json.RawMessage
	SourceIdentity string
	// Caller is the role session or user assuming the role; nil when an AWS service
	// (Lambda, ECS, the scheduler) assumes it on the role's behalf.
	Caller *Principal
}

// ValidationError is a session request STS would refuse as invalid.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

var (
	sessionName  = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	tagKey       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValue     = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
	sourceIDForm = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

// Issue creates a session of spec.RoleARN and returns its credentials. It applies
// STS's rules (durations, chaining, tags, transitive tags, source identity, session
// policy size); whether the caller may assume the role at all is the trust policy's
// decision, made by the caller of Issue.
func (a *Authority) Issue(spec SessionSpec) (Credentials, *Principal, error) {
	role, ok := a.Role(spec.RoleARN)
	if !ok {
		return Credentials{}, nil, &ValidationError{Msg: fmt.Sprintf("role %s does not exist", spec.RoleARN)}
	}
	if !sessionName.MatchString(spec.SessionName) {
		return Credentials{}, nil, &ValidationError{Msg: fmt.Sprintf("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", spec.SessionName)}
	}
	d := spec.Duration
	if d == 0 {
		d = DefaultSessionDuration
	}
	chained := spec.Caller != nil && spec.Caller.Role != nil
	switch {
	case d < MinSessionDuration:
		return Credentials{}, nil, &ValidationError{Msg: "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"}
	case chained && d > ChainedSessionLimit:
		return Credentials{}, nil, &ValidationError{Msg: "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."}
	case d > role.MaxSession:
		return Credentials{}, nil, &ValidationError{Msg: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."}
	}
	tags, transitive, err := sessionTags(spec)
	if err != nil {
		return Credentials{}, nil, err
	}
	source := spec.SourceIdentity
	if spec.Caller != nil && spec.Caller.SourceIdentity != "" {
		if source != "" && source != spec.Caller.SourceIdentity {
			return Credentials{}, nil, &ValidationError{Msg: "SourceIdentity cannot be changed once set on a role session"}
		}
		source = spec.Caller.SourceIdentity
	}
	if source != "" && !sourceIDForm.MatchString(source) {
		return Credentials{}, nil, &ValidationError{Msg: "SourceIdentity must be 2 to 64 characters of [\\w+=,.@-]"}
	}
	var policy json.RawMessage
	if len(spec.Policy) > 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, spec.Policy); err != nil {
			return Credentials{}, nil, &ValidationError{Msg: "The policy is not in the valid JSON format."}
		}
		if compact.Len() > MaxSessionPolicyBytes {
			return Credentials{}, nil, &ValidationError{Msg: "Packed policy consumes more than the allowed size."}
		}
		policy = compact.Bytes()
	}
	now := a.now()
	p := &Principal{
		Account: a.Account, Role: role, SessionName: spec.SessionName,
		ARN:    "arn:aws:sts::" + a.Account + ":assumed-role/" + role.Name + "/" + spec.SessionName,
		UserID: role.ID + ":" + spec.SessionName, Tags: tags, TransitiveTagKeys: transitive,
		SessionPolicy: policy, SourceIdentity: source, Chained: chained,
		Issued: now, Expires: now.Add(d),
	}
	c := Credentials{AccessKeyID: "ASIA" + randomID(16), SecretAccessKey: randomSecret(),
		SessionToken: randomToken(), Expires: p.Expires}
	a.mu.Lock()
	a.keys[c.AccessKeyID] = &key{secret: c.SecretAccessKey, token: c.SessionToken, principal: p}
	a.expireLocked(now)
	a.mu.Unlock()
	return c, p, nil
}

// sessionTags merges the caller's transitive tags (which a new session cannot
// override) with spec's tags, and checks both against STS's limits.
func sessionTags(spec SessionSpec) (map[string]string, []string, error) {
	tags := map[string]string{}
	var transitive []string
	lower := map[string]bool{}
	if c := spec.Caller; c != nil {
		for _, k := range c.TransitiveTagKeys {
			tags[k] = c.Tags[k]
			transitive = append(transitive, k)
			lower[strings.ToLower(k)] = true
		}
	}
	if len(spec.Tags) > MaxSessionTags {
		return nil, nil, &ValidationError{Msg: fmt.Sprintf("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to %d", MaxSessionTags)}
	}
	seen := map[string]bool{}
	for k, v := range spec.Tags {
		if !tagKey.MatchString(k) || !tagValue.MatchString(v) {
			return nil, nil, &ValidationError{Msg: fmt.Sprintf("invalid session tag %q", k)}
		}
		// Tag keys are case-insensitive in IAM: two keys differing in case are one.
		if seen[strings.ToLower(k)] {
			return nil, nil, &ValidationError{Msg: fmt.Sprintf("duplicate session tag key %q", k)}
		}
		seen[strings.ToLower(k)] = true
		if lower[strings.ToLower(k)] {
			return nil, nil, &ValidationError{Msg: fmt.Sprintf("One or more of the specified transitive tag keys can't be set because it conflicts with a transitive tag inherited from the calling role session: %s", k)}
		}
		tags[k] = v
	}
	for _, k := range spec.TransitiveTagKeys {
		if _, ok := spec.Tags[k]; !ok {
			return nil, nil, &ValidationError{Msg: fmt.Sprintf("transitive tag key %q is not a session tag", k)}
		}
		transitive = append(transitive, k)
	}
	if len(tags) == 0 {
		tags = nil
	}
	sort.Strings(transitive)
	return tags, transitive, nil
}

// expireLocked forgets sessions expired for over a day, so a long-running stack does
// not keep every key it ever issued; a request signed with one is still refused as
// unknown, as AWS refuses a key it no longer knows.
func (a *Authority) expireLocked(now time.Time) {
	for id, k := range a.keys {
		if e := k.principal.Expires; !e.IsZero() && now.Sub(e) > 24*time.Hour {
			delete(a.keys, id)
		}
	}
}

// Resolve returns the principal behind accessKeyID presented with token, and its
// secret: ErrUnknownKey, ErrBadToken or ErrExpired otherwise.
func (a *Authority) Resolve(accessKeyID, token string) (*Principal, string, error) {
	a.mu.RLock()
	k, ok := a.keys[accessKeyID]
	a.mu.RUnlock()
	switch {
	case !ok:
		return nil, "", &AuthError{Reason: ErrUnknownKey, AccessKeyID: accessKeyID, Detail: "The security token included in the request is invalid."}
	case k.token != token:
		return nil, "", &AuthError{Reason: ErrBadToken, AccessKeyID: accessKeyID, Detail: "The security token included in the request is invalid."}
	case !k.principal.Expires.IsZero() && !a.now().Before(k.principal.Expires):
		return nil, "", &AuthError{Reason: ErrExpired, AccessKeyID: accessKeyID, Detail: "The security token included in the request is expired"}
	}
	return k.principal, k.secret, nil
}

// Revoke forgets accessKeyID: requests signed with it are refused as unknown.
func (a *Authority) Revoke(accessKeyID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.keys[accessKeyID]; !ok {
		return errors.New("revoke: unknown access key id")
	}
	delete(a.keys, accessKeyID)
	return nil
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func randomSecret() string {
	b := make([]byte, 40)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = secretAlphabet[int(b[i])%len(secretAlphabet)]
	}
	return string(b)
}

func randomToken() string {
	b := make([]byte, 160)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = secretAlphabet[int(b[i])%len(secretAlphabet)]
	}
	return "IQoJb3JpZ2luX2Vj" + string(b)
}
