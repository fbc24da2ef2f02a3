package ecslocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// A task's identities, as Fargate gives them: the task role reaches the task's code only
// through a container-credentials endpoint (never as keys in its environment), the
// execution role serves what ECS itself does to start the task. Both are sessions of
// ecs-tasks.amazonaws.com named after the task id, revoked when the task stops.

// CredentialsMinValidity is the least time left on any credentials the credentials
// endpoint answers: a task-role session with less is replaced by a new one first, so an
// SDK that re-fetches when its credentials near their expiry keeps working.
const CredentialsMinValidity = 15 * time.Minute

// CredentialsPathPrefix is where the credentials endpoint serves a task's credentials:
// GET <prefix><id>, the path 169.254.170.2 serves on Fargate.
const CredentialsPathPrefix = "/v2/credentials/"

// credentialVariables are the variables that would hand a task static credentials, or
// point its SDK at credentials other than its own: never set in a task's environment
// but by the credentials endpoint's own variable.
var credentialVariables = map[string]bool{
	"AWS_ACCESS_KEY_ID":                      true,
	"AWS_SECRET_ACCESS_KEY":                  true,
	"AWS_SESSION_TOKEN":                      true,
	"AWS_SECURITY_TOKEN":                     true,
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": true,
	"AWS_CONTAINER_CREDENTIALS_FULL_URI":     true,
	"AWS_CONTAINER_AUTHORIZATION_TOKEN":      true,
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": true,
}

func credentialVariable(name string) bool { return credentialVariables[name] }

// roleSession is one role's session of one task, renewed while the task lives.
type roleSession struct {
	role, name string

	mu        sync.Mutex
	creds     identity.Credentials
	principal *identity.Principal
	keys      []string // every key issued, revoked together when the task stops
	revoked   bool
}

// taskIdentity is what RunTask issued for a task.
type taskIdentity struct {
	// credID is the credentials endpoint's id of the task ("" without a task role).
	credID     string
	task, exec *roleSession
}

var errSessionRevoked = errors.New("the task's sessions are revoked")

// issueIdentity issues the sessions of a task's roles, as RunTask does: a role the
// service may not assume refuses the call with ECS's ClientException.
func (s *Server) issueIdentity(ctx context.Context, taskID, taskRole, execRole string) (*taskIdentity, *APIError) {
	if taskRole == "" && execRole == "" {
		return nil, nil
	}
	ident := &taskIdentity{}
	for _, r := range []struct {
		arn string
		dst **roleSession
	}{{taskRole, &ident.task}, {execRole, &ident.exec}} {
		if r.arn == "" {
			continue
		}
		rs := &roleSession{role: r.arn, name: taskID}
		var err error
		if s.issuer == nil {
			err = errors.New("ecslocal has no session issuer (Server.Sessions)")
		} else {
			_, _, err = s.sessionCredentials(ctx, rs)
		}
		if err != nil {
			s.log.Warn("role not assumed for a task", logRole, r.arn, logging.Error, err.Error())
			s.revokeIdentity(ident)
			return nil, &APIError{Type: ClientException, Message: fmt.Sprintf(
				"ECS was unable to assume the role '%s' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role.", r.arn)}
		}
		*r.dst = rs
	}
	if ident.task != nil {
		ident.credID = newUUID()
	}
	return ident, nil
}

// sessionCredentials returns the session's credentials, issuing a new session when the
// current one has less than CredentialsMinValidity left.
func (s *Server) sessionCredentials(ctx context.Context, rs *roleSession) (identity.Credentials, *identity.Principal, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.revoked {
		return identity.Credentials{}, nil, errSessionRevoked
	}
	if rs.principal != nil && rs.creds.Expires.Sub(s.sessionNow()) >= CredentialsMinValidity {
		return rs.creds, rs.principal, nil
	}
	c, p, err := s.issuer.IssueForService(ctx, iampolicy.ECSTasksService, rs.role, rs.name, s.sessDur)
	if err != nil {
		return identity.Credentials{}, nil, fmt.Errorf("assume %s as %s: %w", rs.role, iampolicy.ECSTasksService, err)
	}
	rs.creds, rs.principal = c, p
	rs.keys = append(rs.keys, c.AccessKeyID)
	return c, p, nil
}

// revokeIdentity revokes every session key the task was ever given, so a leaked key
// stops working with the task.
func (s *Server) revokeIdentity(ident *taskIdentity) {
	if ident == nil {
		return
	}
	for _, rs := range []*roleSession{ident.task, ident.exec} {
		if rs == nil {
			continue
		}
		rs.mu.Lock()
		rs.revoked = true
		keys := rs.keys
		rs.keys = nil
		rs.mu.Unlock()
		for _, k := range keys {
			// A key the authority no longer knows (expired a day ago) is refused already.
			if s.sessAuth != nil {
				_ = s.sessAuth.Revoke(k)
			}
		}
	}
}

// sessionNow is the clock sessions are judged by: the authority's.
func (s *Server) sessionNow() time.Time {
	if s.sessAuth != nil && s.sessAuth.Now != nil {
		return s.sessAuth.Now()
	}
	return time.Now()
}

// credentialsEnv is the variable that tells a task where its role's credentials are.
// An isolated task has the metadata address in its own network namespace and is told
// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=<CredentialsPathPrefix><id>, as on Fargate (the
// SDKs prefix it with http://169.254.170.2); any other is told the metadata server's
// loopback address as a full URI, which every process of the machine reaches.
func (s *Server) credentialsEnv(t *task) (name, value string) {
	if s.iso != nil && s.iso.namespaces {
		return "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", CredentialsPathPrefix + t.ident.credID
	}
	return "AWS_CONTAINER_CREDENTIALS_FULL_URI", s.metadataEndpoint() + CredentialsPathPrefix + t.ident.credID
}

// wireCredentials is the credentials endpoint's answer, member for member as the ECS
// agent writes it.
type wireCredentials struct {
	RoleArn         string `json:"RoleArn"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// credentialsError is the agent's error body (its handlersutils.ErrorMessage).
type credentialsError struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	HTTPErrorCode int    `json:"HTTPErrorCode"`
}

// serveCredentials answers GET /v2/credentials/<id> as the ECS agent does: the task
// role's current credentials, or 400 InvalidIdInRequest for an id no live task has (a
// stopped task's included).
//
// scope, when set, is the one task the listener serves (the listener inside its
// network namespace): any other id is unknown there. Without scope (the metadata
// server's loopback listener) the credentials of isolated tasks are unknown: they are
// served only inside their namespace.
func (s *Server) serveCredentials(w http.ResponseWriter, r *http.Request, scope *task) {
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(CredentialsPathPrefix, "/")), "/")
	const prefix = "CredentialsV2Request: "
	if id == "" {
		writeCredentials(w, http.StatusBadRequest, credentialsError{Code: "NoIdInRequest", Message: prefix + "No Credential ID in the request", HTTPErrorCode: http.StatusBadRequest})
		return
	}
	s.mu.Lock()
	t := s.creds[id]
	isolated := s.iso != nil && s.iso.namespaces
	s.mu.Unlock()
	if scope != nil && t != scope || scope == nil && isolated {
		t = nil
	}
	notFound := credentialsError{Code: "InvalidIdInRequest", Message: prefix + "Credentials not found", HTTPErrorCode: http.StatusBadRequest}
	if t == nil {
		writeCredentials(w, http.StatusBadRequest, notFound)
		return
	}
	c, _, err := s.sessionCredentials(r.Context(), t.ident.task)
	switch {
	case errors.Is(err, errSessionRevoked):
		writeCredentials(w, http.StatusBadRequest, notFound)
		return
	case err != nil:
		s.log.Warn("task credentials not issued", logging.TaskARN, t.arn, logging.Error, err.Error())
		writeCredentials(w, http.StatusInternalServerError, credentialsError{Code: "InternalServerError", Message: "Internal server error", HTTPErrorCode: http.StatusInternalServerError})
		return
	}
	writeCredentials(w, http.StatusOK, wireCredentials{
		RoleArn: t.ident.task.role, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
		Token: c.SessionToken, Expiration: c.Expires.UTC().Format(time.RFC3339),
	})
}

func writeCredentials(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var (
	roleARN      = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}$`)
	logGroupName = regexp.MustCompile(`^[.\-_/#A-Za-z0-9]{1,512}$`)
)

// validateIdentity checks a definition's roles, secrets and log configuration as
// RegisterTaskDefinition does for Fargate.
func validateIdentity(td TaskDefinition) []error {
	var errs []error
	for what, arn := range map[string]string{"task role": td.TaskRole, "execution role": td.ExecutionRole} {
		if arn != "" && !roleARN.MatchString(arn) {
			errs = append(errs, fmt.Errorf("%s %q is not an IAM role ARN", what, arn))
		}
	}
	for name, from := range td.Secrets {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			errs = append(errs, fmt.Errorf("secret variable name %q is not valid", name))
		}
		if credentialVariable(name) {
			errs = append(errs, fmt.Errorf("secret variable %s would give the task static credentials: tasks get their role through the credentials endpoint", name))
		}
		if _, dup := td.Environment[name]; dup {
			errs = append(errs, fmt.Errorf("variable %s is both in the environment and a secret", name))
		}
		if _, err := parseValueFrom(from); err != nil {
			errs = append(errs, fmt.Errorf("secret %s: %w", name, err))
		}
	}
	if td.LogGroup != "" && !logGroupName.MatchString(td.LogGroup) {
		errs = append(errs, fmt.Errorf("log group %q is not a CloudWatch Logs group name", td.LogGroup))
	}
	if strings.ContainsAny(td.LogStreamPrefix, ":*") {
		errs = append(errs, fmt.Errorf("log stream prefix %q holds ':' or '*'", td.LogStreamPrefix))
	}
	if td.ExecutionRole == "" {
		if _, ok := parseECRImage(td.Image); ok {
			errs = append(errs, errors.New("Fargate requires task definition to have execution role ARN to support ECR images."))
		}
		if td.LogGroup != "" {
			errs = append(errs, errors.New("Fargate requires task definition to have execution role ARN to support log driver awslogs."))
		}
		if len(td.Secrets) > 0 {
			errs = append(errs, errors.New("Fargate requires task definition to have execution role ARN to support secrets."))
		}
	}
	return errs
}
