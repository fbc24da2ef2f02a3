package funcurl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-lambda-go/events"
)

// ErrNoCaller: the request carries no IAM caller (not an AWS_IAM function URL, or an
// event made by hand).
var ErrNoCaller = errors.New("no IAM caller")

// Caller is the role session that signed a function URL request, as Lambda verified
// it: arn:<partition>:sts::<account>:assumed-role/<role>/<session>.
type Caller struct {
	ARN       string
	Partition string
	Account   string
	// Role is the role's name (without a path); Session the session's name. ECS names
	// a task role's session after the task's id; the vendor names a sandbox's after
	// its task's too.
	Role, Session string
}

// CallerOf returns the role session that called the function URL. Any other kind of
// caller (an IAM user, a federated user, the account's root) is an error: only role
// sessions call sandgate's function URLs.
func CallerOf(ev events.LambdaFunctionURLRequest) (Caller, error) {
	a := ev.RequestContext.Authorizer
	if a == nil || a.IAM == nil || a.IAM.UserARN == "" {
		return Caller{}, ErrNoCaller
	}
	return ParseCaller(a.IAM.UserARN)
}

// ParseCaller parses an assumed-role session ARN.
func ParseCaller(arn string) (Caller, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sts" || parts[4] == "" {
		return Caller{}, fmt.Errorf("caller %q: not an STS ARN", arn)
	}
	rest, ok := strings.CutPrefix(parts[5], "assumed-role/")
	if !ok {
		return Caller{}, fmt.Errorf("caller %q: not a role session", arn)
	}
	role, session, ok := strings.Cut(rest, "/")
	if !ok || role == "" || session == "" || strings.Contains(session, "/") {
		return Caller{}, fmt.Errorf("caller %q: not a role session", arn)
	}
	return Caller{ARN: arn, Partition: parts[1], Account: parts[4], Role: role, Session: session}, nil
}

// RoleName returns the name of the role roleARN (arn:…:iam::<account>:role[/path]/<name>)
// and its account.
func RoleName(roleARN string) (name, account string, err error) {
	parts := strings.SplitN(roleARN, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || !strings.HasPrefix(parts[5], "role/") {
		return "", "", fmt.Errorf("%q is not a role ARN", roleARN)
	}
	p := parts[5]
	return p[strings.LastIndex(p, "/")+1:], parts[4], nil
}

// Is reports whether the caller is a session of the role roleName in account.
func (c Caller) Is(roleName, account string) bool {
	return c.Role == roleName && c.Account == account
}

// RunsTask reports whether the caller's session is named after the task taskARN of
// cluster in the caller's account (arn:<partition>:ecs:<region>:<account>:task/<cluster>/<id>):
// the task whose task role, or whose vended sandbox session, signed the request.
func (c Caller) RunsTask(taskARN, cluster string) bool {
	parts := strings.SplitN(taskARN, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] != c.Partition || parts[2] != "ecs" || parts[4] != c.Account {
		return false
	}
	return parts[5] == "task/"+cluster+"/"+c.Session
}
