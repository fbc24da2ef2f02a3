package ecslocal_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/stslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/logging"
)

const (
	account  = "000000000000"
	region   = "us-east-1"
	logGroup = "/sandgate/sandboxes"
	// secretValue is the storage secret's JSON; its keys' values must never be logged.
	accessKeyValue = "AKIASTORAGEKEY000001"
	secretKeyValue = "storage-secret-never-logged-7f3a9c"
)

var sandboxesARN = "arn:aws:ecs:" + region + ":" + account + ":cluster/sandboxes"

// The policy evaluator (a Node process) is shared by the package's tests: its decisions
// depend only on what it is asked.
var (
	evalOnce sync.Once
	evalErr  error
	shared   *iampolicy.Evaluator
)

func evaluator(t testing.TB) *iampolicy.Evaluator {
	t.Helper()
	evalOnce.Do(func() {
		root, err := iampolicy.RepoRoot()
		if err != nil {
			evalErr = err
			return
		}
		shared, evalErr = iampolicy.Start(context.Background(), filepath.Join(root, iampolicy.ScriptPath),
			filepath.Join(root, iampolicy.NodeModulesPath), iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	})
	if evalErr != nil {
		t.Fatalf("policy evaluator: %v", evalErr)
	}
	return shared
}

func closeEvaluator() {
	if shared != nil {
		_ = shared.Close()
	}
}

// world is an ECS server with identities, as the stack runs it: an Authority on a
// settable clock, the policy evaluator, STS and Secrets Manager emulators on the same
// Authority, the roles tasks get and the users who call ECS.
type world struct {
	*env
	auth      *identity.Authority
	clock     *testkit.Clock
	logs      *testkit.Logs
	stsURL    string
	secretARN string
	secrets   *secretslocal.Server
	users     map[string]identity.Credentials
}

func trustECSTasks() json.RawMessage {
	return json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:SourceAccount":"` + account + `"}}}]}`)
}

func policy(name string, statements ...string) identity.Policy {
	return identity.Policy{Name: name, Document: json.RawMessage(`{"Version":"2012-10-17","Statement":[` + strings.Join(statements, ",") + `]}`)}
}

func roleARN(name string) string { return "arn:aws:iam::" + account + ":role/" + name }

// startWorld starts the world; clockOffset sets the Authority's clock off the real time
// (sessions and signatures are judged by it), configure adjusts the server before Start.
func startWorld(t *testing.T, clockOffset time.Duration, configure ...func(*ecslocal.Server)) *world {
	t.Helper()
	ev := evaluator(t)
	w := &world{auth: identity.New(account, region), clock: testkit.NewClock(), logs: &testkit.Logs{}, users: map[string]identity.Credentials{}}
	w.clock.Advance(clockOffset)
	w.auth.Now = w.clock.Now

	w.secrets = secretslocal.New(w.auth, ev, nil)
	var err error
	if w.secretARN, err = w.secrets.Put("sandgate/storage", `{"accessKeyId":"`+accessKeyValue+`","secretAccessKey":"`+secretKeyValue+`"}`); err != nil {
		t.Fatal(err)
	}
	secretsHTTP := httptest.NewServer(w.secrets)
	t.Cleanup(secretsHTTP.Close)
	stsHTTP := httptest.NewServer(&stslocal.Server{Authority: w.auth})
	t.Cleanup(stsHTTP.Close)
	w.stsURL = stsHTTP.URL

	logsStatement := `{"Sid":"Logs","Effect":"Allow","Action":["logs:CreateLogStream","logs:PutLogEvents"],"Resource":"arn:aws:logs:` + region + `:` + account + `:log-group:` + logGroup + `:*"}`
	secretStatement := `{"Sid":"Secret","Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"` + w.secretARN + `"}`
	for _, r := range []identity.Role{
		{Name: "sandbox-task", Trust: trustECSTasks(), Policies: []identity.Policy{policy("sandbox-task/sandbox",
			`{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::sandgate/users/*"}`)}},
		{Name: "sandbox-exec", Trust: trustECSTasks(), Policies: []identity.Policy{policy("sandbox-exec/execution", logsStatement, secretStatement)}},
		{Name: "exec-no-secrets", Trust: trustECSTasks(), Policies: []identity.Policy{policy("exec-no-secrets/execution", logsStatement)}},
		{Name: "exec-no-logs", Trust: trustECSTasks(), Policies: []identity.Policy{policy("exec-no-logs/execution", secretStatement)}},
		{Name: "exec-create-only", Trust: trustECSTasks(), Policies: []identity.Policy{policy("exec-create-only/execution",
			`{"Effect":"Allow","Action":"logs:CreateLogStream","Resource":"arn:aws:logs:`+region+`:`+account+`:log-group:`+logGroup+`:*"}`)}},
		{Name: "lambda-only", Policies: nil,
			Trust: json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)},
	} {
		if _, err := w.auth.AddRole(r); err != nil {
			t.Fatal(err)
		}
	}

	taskDefs := "arn:aws:ecs:" + region + ":" + account + ":task-definition/*"
	tasks := "arn:aws:ecs:" + region + ":" + account + ":task/sandboxes/*"
	run := `{"Sid":"Run","Effect":"Allow","Action":"ecs:RunTask","Resource":"` + taskDefs + `","Condition":{"ArnEquals":{"ecs:cluster":"` + sandboxesARN + `"}}}`
	manage := `{"Sid":"Manage","Effect":"Allow","Action":["ecs:DescribeTasks","ecs:StopTask"],"Resource":"` + tasks + `","Condition":{"ArnEquals":{"ecs:cluster":"` + sandboxesARN + `"}}}`
	list := `{"Sid":"List","Effect":"Allow","Action":"ecs:ListTasks","Resource":"*","Condition":{"ArnEquals":{"ecs:cluster":"` + sandboxesARN + `"}}}`
	tag := `{"Sid":"Tag","Effect":"Allow","Action":"ecs:TagResource","Resource":"` + tasks + `","Condition":{"StringEquals":{"ecs:CreateAction":"RunTask"}}}`
	var passable []string
	for _, r := range []string{"sandbox-task", "sandbox-exec", "exec-no-secrets", "exec-no-logs", "exec-create-only", "lambda-only"} {
		passable = append(passable, `"`+roleARN(r)+`"`)
	}
	pass := `{"Sid":"Pass","Effect":"Allow","Action":"iam:PassRole","Resource":[` + strings.Join(passable, ",") + `],"Condition":{"StringEquals":{"iam:PassedToService":"ecs-tasks.amazonaws.com"}}}`
	for name, statements := range map[string][]string{
		"launcher":     {run, manage, list, tag, pass, `{"Sid":"Definitions","Effect":"Allow","Action":"ecs:DescribeTaskDefinition","Resource":"*"}`},
		"no-pass":      {run, manage, list, tag},
		"no-tag":       {run, manage, list, pass},
		"lister":       {list},
		"describer":    {manage, list},
		"unprivileged": {`{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}`},
	} {
		c, _, err := w.auth.AddUser(name, []identity.Policy{policy(name+"/ecs", statements...)})
		if err != nil {
			t.Fatal(err)
		}
		w.users[name] = c
	}

	issuer := identity.ServiceIssuer{Authority: w.auth, Trust: func(ctx context.Context, role *identity.Role, service string) error {
		return ev.Trust(ctx, iampolicy.TrustRequest{Role: role, Service: service, Region: region})
	}}
	w.env = start(t, append([]func(*ecslocal.Server){func(s *ecslocal.Server) {
		s.Logger = logging.New(io.MultiWriter(w.logs, testLogWriter{t}), slog.LevelDebug)
		s.Authority, s.Authorizer, s.Sessions = w.auth, ev, issuer
		s.SecretsEndpoint = secretsHTTP.URL
		s.Env = map[string]string{
			"AWS_ENDPOINT_URL_STS": stsHTTP.URL,
			// What a careless stack might pass: kept out of every task's environment.
			"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local",
		}
	}}, configure...)...)
	w.ecs = w.client(t, "launcher")
	return w
}

// client is an ECS client signed with user's key, making one attempt per call.
func (w *world) client(t testing.TB, user string, optFns ...func(*ecs.Options)) *ecs.Client {
	t.Helper()
	c := w.users[user]
	return w.clientWith(t, c, optFns...)
}

func (w *world) clientWith(t testing.TB, c identity.Credentials, optFns ...func(*ecs.Options)) *ecs.Client {
	t.Helper()
	cfg, err := awsconf.Load(context.Background(), append(awsconf.Loopback(w.srv.Endpoint()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)),
		config.WithRetryMaxAttempts(1))...)
	if err != nil {
		t.Fatal(err)
	}
	return ecs.NewFromConfig(cfg, optFns...)
}

// stsAs calls GetCallerIdentity with c.
func (w *world) stsAs(c identity.Credentials) (*sts.GetCallerIdentityOutput, error) {
	client := sts.New(sts.Options{Region: region, BaseEndpoint: aws.String(w.stsURL), Retryer: aws.NopRetryer{},
		HTTPClient:  awsconf.NewHTTPClient(),
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)})
	return client.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
}

// registerWorker registers the fixture as family "worker" with td's identities.
func (w *world) registerWorker(t testing.TB, td ecslocal.TaskDefinition) string {
	t.Helper()
	td.Family = "worker"
	if td.Environment == nil {
		td.Environment = map[string]string{"PORT": w.port}
	}
	return w.register(t, td)
}

func workerInput(token string) *ecs.RunTaskInput {
	in := runInput(token)
	in.TaskDefinition = aws.String("worker")
	return in
}

// credentialsOf fetches the task's credentials as its SDK would: from the URI its
// environment names.
func (w *world) credentialsOf(t testing.TB, ip string) (string, int, map[string]string) {
	t.Helper()
	code, uri := w.get(t, ip, "/env?name=AWS_CONTAINER_CREDENTIALS_FULL_URI")
	if code != http.StatusOK {
		t.Fatalf("the task has no AWS_CONTAINER_CREDENTIALS_FULL_URI: %d %s", code, uri)
	}
	status, body := fetch(t, string(uri))
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	return string(uri), status, m
}

func fetch(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func credsOf(m map[string]string) identity.Credentials {
	return identity.Credentials{AccessKeyID: m["AccessKeyId"], SecretAccessKey: m["SecretAccessKey"], SessionToken: m["Token"]}
}

type callerIdentity struct {
	Arn         string `json:"arn"`
	AccessKeyID string `json:"accessKeyId"`
	Source      string `json:"source"`
}

// taskSTS asks the task to call GetCallerIdentity with its SDK.
func (w *world) taskSTS(t testing.TB, ip string) callerIdentity {
	t.Helper()
	code, body := w.get(t, ip, "/sts")
	var id callerIdentity
	if code != http.StatusOK || json.Unmarshal(body, &id) != nil {
		t.Fatalf("the task's GetCallerIdentity: %d %s", code, body)
	}
	return id
}

// tamper flips one character of the request's signature after the SDK signed it.
type tamper struct{ next aws.HTTPClient }

func (c tamper) Do(r *http.Request) (*http.Response, error) {
	h := r.Header.Get("Authorization")
	if i := strings.LastIndex(h, "Signature="); i >= 0 && len(h) > i+10 {
		b := []byte(h)
		if b[len(b)-1] == '0' {
			b[len(b)-1] = '1'
		} else {
			b[len(b)-1] = '0'
		}
		r.Header.Set("Authorization", string(b))
	}
	return c.next.Do(r)
}

func TestServer_API_RefusesBadSignatures(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	if _, err := w.auth.AddRole(identity.Role{Name: "caller"}); err != nil {
		t.Fatal(err)
	}
	// A session issued two hours ago, on the Authority's clock, has expired.
	w.clock.Advance(-2 * time.Hour)
	old, _, err := w.auth.Issue(identity.SessionSpec{RoleARN: roleARN("caller"), SessionName: "old-session"})
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(2 * time.Hour)
	fresh, _, err := w.auth.Issue(identity.SessionSpec{RoleARN: roleARN("caller"), SessionName: "fresh-session"})
	if err != nil {
		t.Fatal(err)
	}
	wrongToken := fresh
	wrongToken.SessionToken = "IQoJb3JpZ2luX2VjEXAMPLE"

	for _, c := range []struct {
		name, want string
		client     *ecs.Client
	}{
		{"unsigned", "MissingAuthenticationTokenException", w.clientWith(t, identity.Credentials{}, func(o *ecs.Options) { o.Credentials = aws.AnonymousCredentials{} })},
		{"unknown key", "UnrecognizedClientException", w.clientWith(t, identity.Credentials{AccessKeyID: "AKIAUNKNOWNKEY000000", SecretAccessKey: "x"})},
		{"wrong session token", "UnrecognizedClientException", w.clientWith(t, wrongToken)},
		{"tampered signature", "InvalidSignatureException", w.client(t, "launcher", func(o *ecs.Options) { o.HTTPClient = tamper{awsconf.NewHTTPClient()} })},
		{"expired session", "ExpiredTokenException", w.clientWith(t, old)},
		{"another region's scope", "InvalidSignatureException", w.client(t, "launcher", func(o *ecs.Options) { o.Region = "eu-west-1" })},
	} {
		_, err := c.client.ListTasks(context.Background(), &ecs.ListTasksInput{Cluster: aws.String("sandboxes")})
		if got := testkit.ErrorCode(err); got != c.want {
			t.Errorf("%s: ListTasks = %v (code %q), want %s", c.name, err, got, c.want)
		}
		_, err = c.client.RunTask(context.Background(), runInput("refused-"+strings.ReplaceAll(c.name, " ", "-")))
		if got := testkit.ErrorCode(err); got != c.want {
			t.Errorf("%s: RunTask = %v (code %q), want %s", c.name, err, got, c.want)
		}
	}
	if n := len(w.srv.Tasks()); n != 0 || len(w.srv.RunTaskRequests()) != 0 {
		t.Errorf("%d tasks and %d RunTask requests after refusals, want none", n, len(w.srv.RunTaskRequests()))
	}
	// A signed session of an allowed caller works (a role session signs with its token).
	if _, err := w.clientWith(t, fresh).ListTasks(context.Background(), &ecs.ListTasksInput{Cluster: aws.String("sandboxes")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Errorf("a valid session without permission: ListTasks = %v, want AccessDeniedException", err)
	}

	// The wire shape: 400, JSON 1.1, __type and message.
	req, _ := http.NewRequest(http.MethodPost, w.srv.Endpoint()+"/", strings.NewReader(`{"cluster":"sandboxes"}`))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "AmazonEC2ContainerServiceV20141113.ListTasks")
	code, body := do(t, req)
	var m map[string]string
	if code != http.StatusBadRequest || json.Unmarshal(body, &m) != nil || m["__type"] != "MissingAuthenticationTokenException" || m["message"] != "Missing Authentication Token" {
		t.Errorf("unsigned raw request: %d %s", code, body)
	}
}

func do(t testing.TB, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		t.Errorf("Content-Type %q", ct)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestServer_API_AccessDenied(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	defARN := w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	ctx := context.Background()

	// The lister may list, nothing more.
	lister := w.client(t, "lister")
	if _, err := lister.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes")}); err != nil {
		t.Fatalf("lister ListTasks: %v", err)
	}
	_, err := lister.RunTask(ctx, workerInput("lister"))
	want := "User: arn:aws:iam::" + account + ":user/lister is not authorized to perform: ecs:RunTask on resource: " + defARN + " because no identity-based policy allows the ecs:RunTask action"
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), want) {
		t.Errorf("lister RunTask = %v, want AccessDeniedException %q", err, want)
	}
	if _, err := lister.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("other")}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Errorf("lister ListTasks on another cluster = %v, want AccessDeniedException", err)
	}
	if _, err := w.client(t, "unprivileged").ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes")}); testkit.ErrorCode(err) != "AccessDeniedException" ||
		!strings.Contains(err.Error(), "ecs:ListTasks on resource: *") {
		t.Errorf("unprivileged ListTasks = %v, want AccessDeniedException on *", err)
	}

	// The launcher runs, describes and stops; the describer describes but cannot stop.
	task := w.run(t, workerInput("launcher"))
	arn := aws.ToString(task.TaskArn)
	describer := w.client(t, "describer")
	if out, err := describer.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("sandboxes"), Tasks: []string{arn}}); err != nil || len(out.Tasks) != 1 {
		t.Errorf("describer DescribeTasks = %v", err)
	}
	if _, err := lister.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("sandboxes"), Tasks: []string{arn}}); testkit.ErrorCode(err) != "AccessDeniedException" ||
		!strings.Contains(err.Error(), "ecs:DescribeTasks on resource: "+arn) {
		t.Errorf("lister DescribeTasks = %v, want AccessDeniedException on the task's ARN", err)
	}
	if _, err := lister.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(taskID(arn))}); testkit.ErrorCode(err) != "AccessDeniedException" ||
		!strings.Contains(err.Error(), "ecs:StopTask on resource: "+arn) {
		t.Errorf("lister StopTask = %v, want AccessDeniedException on the task's ARN", err)
	}
	if got := aws.ToString(w.describe(t, arn).DesiredStatus); got != "RUNNING" {
		t.Errorf("a refused StopTask stopped the task: desired %s", got)
	}
	if _, err := w.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Errorf("launcher StopTask: %v", err)
	}
}

func TestServer_RunTask_DeniedWithoutPassRole(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	ctx := context.Background()
	_, err := w.client(t, "no-pass").RunTask(ctx, workerInput("no-pass"))
	want := "is not authorized to perform: iam:PassRole on resource: " + roleARN("sandbox-task")
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), want) {
		t.Errorf("RunTask without iam:PassRole = %v, want AccessDeniedException %q", err, want)
	}
	// A definition without roles passes none.
	if _, err := w.client(t, "no-pass").RunTask(ctx, runInput("no-roles")); err != nil {
		t.Errorf("RunTask of a definition without roles: %v", err)
	}
	// An override names a role the launcher may not pass.
	if _, err := w.auth.AddRole(identity.Role{Name: "admin", Trust: trustECSTasks()}); err != nil {
		t.Fatal(err)
	}
	in := workerInput("override")
	in.Overrides = &types.TaskOverride{TaskRoleArn: aws.String(roleARN("admin"))}
	_, err = w.ecs.RunTask(ctx, in)
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "iam:PassRole on resource: "+roleARN("admin")) {
		t.Errorf("RunTask overriding the task role = %v, want AccessDeniedException on the override's role", err)
	}
	if tasks := w.srv.Tasks(); len(tasks) != 1 || tasks[0].Family != "sandbox" {
		t.Errorf("tasks %+v, want only the one without roles", tasks)
	}
}

func TestServer_RunTask_DeniedOnAnotherCluster(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	in := workerInput("other-cluster")
	in.Cluster = aws.String("other")
	_, err := w.ecs.RunTask(context.Background(), in)
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "ecs:RunTask on resource: arn:aws:ecs:"+region+":"+account+":task-definition/worker:1") {
		t.Errorf("RunTask on cluster other = %v, want AccessDeniedException", err)
	}
	if n := len(w.srv.Tasks()); n != 0 {
		t.Errorf("%d tasks run, want none", n)
	}
}

func TestServer_RunTask_TagsNeedTagResource(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	in := workerInput("tagged")
	in.Tags = []types.Tag{{Key: aws.String("sandgate:user"), Value: aws.String("u1")}}
	_, err := w.client(t, "no-tag").RunTask(context.Background(), in)
	if testkit.ErrorCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "ecs:TagResource on resource: arn:aws:ecs:"+region+":"+account+":task/sandboxes/*") {
		t.Errorf("tagged RunTask without ecs:TagResource = %v, want AccessDeniedException", err)
	}
	if _, err := w.client(t, "no-tag").RunTask(context.Background(), workerInput("untagged")); err != nil {
		t.Errorf("untagged RunTask: %v", err)
	}
	w.run(t, in) // the launcher may tag
}

func TestServer_RunTask_RoleECSMayNotAssume(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("lambda-only"), ExecutionRole: roleARN("sandbox-exec")})
	_, err := w.ecs.RunTask(context.Background(), workerInput("untrusted"))
	want := "ECS was unable to assume the role '" + roleARN("lambda-only") + "' that was provided for this task."
	if testkit.ErrorCode(err) != "ClientException" || !strings.Contains(err.Error(), want) {
		t.Errorf("RunTask = %v, want ClientException %q", err, want)
	}
	if n := len(w.srv.Tasks()); n != 0 {
		t.Errorf("%d tasks run, want none", n)
	}
}

// The task's code sees its task role, in a session named after the task, through the
// credentials endpoint alone: no key of any kind is in its environment.
func TestServer_Task_TaskRoleThroughTheCredentialsEndpointOnly(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	in := workerInput("whoami")
	in.Overrides = &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{Name: aws.String("agent"),
		Environment: []types.KeyValuePair{{Name: aws.String("AWS_SESSION_TOKEN"), Value: aws.String("from-an-override")}, {Name: aws.String("KEPT"), Value: aws.String("yes")}}}}}
	task := w.run(t, in)
	arn := aws.ToString(task.TaskArn)
	ip := privateIP(w.waitStatus(t, arn, "RUNNING"))

	id := w.taskSTS(t, ip)
	if want := "arn:aws:sts::" + account + ":assumed-role/sandbox-task/" + taskID(arn); id.Arn != want {
		t.Errorf("the task is %s, want %s", id.Arn, want)
	}
	if id.Source != "CredentialsEndpointProvider" {
		t.Errorf("the task's SDK took its credentials from %q, want the credentials endpoint", id.Source)
	}

	code, body := w.get(t, ip, "/environ")
	var names []string
	if code != http.StatusOK || json.Unmarshal(body, &names) != nil {
		t.Fatalf("environ: %d %s", code, body)
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		if slices.Contains(names, k) {
			t.Errorf("the task's environment holds %s", k)
		}
	}
	for _, k := range []string{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "KEPT", "AWS_ENDPOINT_URL_STS"} {
		if !slices.Contains(names, k) {
			t.Errorf("the task's environment lacks %s: %v", k, names)
		}
	}

	uri, status, creds := w.credentialsOf(t, ip)
	if !strings.HasPrefix(uri, w.srv.MetadataEndpoint()+ecslocal.CredentialsPathPrefix) {
		t.Errorf("credentials URI %s is not under the metadata endpoint", uri)
	}
	exp, err := time.Parse(time.RFC3339, creds["Expiration"])
	if status != http.StatusOK || creds["RoleArn"] != roleARN("sandbox-task") || !strings.HasPrefix(creds["AccessKeyId"], "ASIA") ||
		creds["SecretAccessKey"] == "" || creds["Token"] == "" || err != nil || exp.Sub(w.clock.Now()) < ecslocal.CredentialsMinValidity {
		t.Errorf("credentials endpoint: %d, role %q, key %q, expiration %q", status, creds["RoleArn"], creds["AccessKeyId"], creds["Expiration"])
	}
	if id.AccessKeyID != creds["AccessKeyId"] {
		t.Errorf("the task signed with %s, the endpoint serves %s", id.AccessKeyID, creds["AccessKeyId"])
	}

	// Another id gets the agent's 400, not credentials.
	for _, path := range []string{ecslocal.CredentialsPathPrefix + "00000000-0000-4000-8000-000000000000", ecslocal.CredentialsPathPrefix} {
		code, body := fetch(t, w.srv.MetadataEndpoint()+path)
		if code != http.StatusBadRequest || strings.Contains(string(body), "AccessKeyId") {
			t.Errorf("GET %s = %d %s, want 400 without credentials", path, code, body)
		}
	}
	code, body = fetch(t, w.srv.MetadataEndpoint()+ecslocal.CredentialsPathPrefix+"nope")
	var e map[string]any
	if json.Unmarshal(body, &e) != nil || e["code"] != "InvalidIdInRequest" || e["message"] != "CredentialsV2Request: Credentials not found" || e["HTTPErrorCode"] != float64(400) {
		t.Errorf("unknown id: %d %s", code, body)
	}

	// A task without a task role has no credentials at all.
	plain := w.run(t, runInput("no-role"))
	plainIP := privateIP(w.waitStatus(t, aws.ToString(plain.TaskArn), "RUNNING"))
	if code, _ := w.get(t, plainIP, "/env?name=AWS_CONTAINER_CREDENTIALS_FULL_URI"); code != http.StatusNotFound {
		t.Errorf("a task without a task role has a credentials URI")
	}
	if code, _ := w.get(t, plainIP, "/env?name=AWS_ACCESS_KEY_ID"); code != http.StatusNotFound {
		t.Errorf("a task without a task role has AWS_ACCESS_KEY_ID")
	}
}

// The endpoint renews the task-role session before it expires: the credentials it
// answers are always valid 15 more minutes, and the task's SDK, which re-fetches when it
// deems its credentials expiring, keeps its identity.
func TestServer_Task_CredentialsRefreshAcrossExpiry(t *testing.T) {
	t.Parallel()
	// The Authority's clock starts 3 minutes behind, so that after 6 minutes forward it
	// is still within SigV4's 5-minute skew of the real clock the SDK signs with.
	w := startWorld(t, -3*time.Minute, func(s *ecslocal.Server) { s.SessionDuration = 20 * time.Minute })
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec"),
		// The SDK treats credentials as expiring 20 minutes early: it re-fetches them on
		// every call, as it would near their expiry after 20 minutes of a long task.
		Environment: map[string]string{"PORT": w.port, "TEST_CREDENTIALS_EXPIRY_WINDOW": "20m"}})
	arn := aws.ToString(w.run(t, workerInput("long")).TaskArn)
	ip := privateIP(w.waitStatus(t, arn, "RUNNING"))
	session := "arn:aws:sts::" + account + ":assumed-role/sandbox-task/" + taskID(arn)

	valid := func(creds map[string]string) time.Time {
		t.Helper()
		exp, err := time.Parse(time.RFC3339, creds["Expiration"])
		if err != nil || exp.Sub(w.clock.Now()) < ecslocal.CredentialsMinValidity {
			t.Fatalf("credentials expiring %q at %s: not valid %s more", creds["Expiration"], w.clock.Now().UTC().Format(time.RFC3339), ecslocal.CredentialsMinValidity)
		}
		return exp
	}
	_, _, first := w.credentialsOf(t, ip)
	k1 := credsOf(first)
	valid(first)
	if id := w.taskSTS(t, ip); id.Arn != session || id.AccessKeyID != k1.AccessKeyID {
		t.Fatalf("before the refresh the task is %s with %s, want %s with %s", id.Arn, id.AccessKeyID, session, k1.AccessKeyID)
	}
	if _, _, again := w.credentialsOf(t, ip); again["AccessKeyId"] != k1.AccessKeyID {
		t.Errorf("a session with 20 minutes left was replaced")
	}

	// 14 minutes left: inside the margin, so the endpoint answers a new session.
	w.clock.Advance(6 * time.Minute)
	_, _, second := w.credentialsOf(t, ip)
	k2 := credsOf(second)
	valid(second)
	if k2.AccessKeyID == k1.AccessKeyID {
		t.Fatalf("a session with 14 minutes left was served again")
	}
	if id := w.taskSTS(t, ip); id.Arn != session || id.AccessKeyID != k2.AccessKeyID {
		t.Fatalf("after the refresh the task is %s with %s, want %s with %s", id.Arn, id.AccessKeyID, session, k2.AccessKeyID)
	}

	// Past the first session's expiry: its key is refused, the endpoint's still valid.
	// (Signed calls cannot be made at this clock: it is now beyond SigV4's skew of the
	// real clock, so the check is on the Authority directly.)
	w.clock.Advance(15 * time.Minute)
	if _, _, err := w.auth.Resolve(k1.AccessKeyID, k1.SessionToken); !errors.Is(err, identity.ErrExpired) {
		t.Errorf("the first session after its expiry: %v, want ErrExpired", err)
	}
	_, _, third := w.credentialsOf(t, ip)
	valid(third)
	if p, _, err := w.auth.Resolve(third["AccessKeyId"], third["Token"]); err != nil || p.ARN != session {
		t.Errorf("the endpoint's credentials after the first session's expiry: %v, %v", p, err)
	}
}

func TestServer_Task_SecretsReachTheEnvironment(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	// A rotation: the first value is now AWSPREVIOUS.
	if _, err := w.secrets.Put("sandgate/storage", `{"accessKeyId":"AKIAROTATED000000002","secretAccessKey":"rotated-secret"}`); err != nil {
		t.Fatal(err)
	}
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec"),
		LogGroup: logGroup, LogStreamPrefix: "sandbox",
		Secrets: map[string]string{
			"STORAGE_ACCESS_KEY_ID":     w.secretARN + ":accessKeyId::",
			"STORAGE_SECRET_ACCESS_KEY": w.secretARN + ":secretAccessKey:AWSPREVIOUS:",
			"STORAGE_JSON":              w.secretARN,
		}})
	arn := aws.ToString(w.run(t, workerInput("secrets")).TaskArn)
	ip := privateIP(w.waitStatus(t, arn, "RUNNING"))
	for name, want := range map[string]string{
		"STORAGE_ACCESS_KEY_ID":     "AKIAROTATED000000002",
		"STORAGE_SECRET_ACCESS_KEY": secretKeyValue,
		"STORAGE_JSON":              `{"accessKeyId":"AKIAROTATED000000002","secretAccessKey":"rotated-secret"}`,
	} {
		if code, got := w.get(t, ip, "/env?name="+name); code != http.StatusOK || string(got) != want {
			t.Errorf("%s = %d %q, want %q", name, code, got, want)
		}
	}
	out, err := w.ecs.DescribeTaskDefinition(context.Background(), &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String("worker")})
	if err != nil {
		t.Fatal(err)
	}
	cd := out.TaskDefinition.ContainerDefinitions[0]
	if len(cd.Secrets) != 3 || cd.LogConfiguration == nil || cd.LogConfiguration.Options["awslogs-group"] != logGroup ||
		aws.ToString(out.TaskDefinition.TaskRoleArn) != roleARN("sandbox-task") || aws.ToString(out.TaskDefinition.ExecutionRoleArn) != roleARN("sandbox-exec") {
		t.Errorf("DescribeTaskDefinition: secrets %+v, log configuration %+v, roles %s %s", cd.Secrets, cd.LogConfiguration,
			aws.ToString(out.TaskDefinition.TaskRoleArn), aws.ToString(out.TaskDefinition.ExecutionRoleArn))
	}
	if _, err := w.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	w.waitStatus(t, arn, "STOPPED")
	for _, v := range []string{secretKeyValue, "rotated-secret", "AKIAROTATED000000002"} {
		if strings.Contains(w.logs.String(), v) {
			t.Errorf("a secret's value is in the log")
		}
	}
}

// failedToStart runs a worker and returns its stopped reason, checking that it stopped
// as Fargate stops a task that could not start and that its process never ran.
func (w *world) failedToStart(t *testing.T, token string) string {
	t.Helper()
	arn := aws.ToString(w.run(t, workerInput(token)).TaskArn)
	task := w.waitStatus(t, arn, "STOPPED")
	if task.StopCode != types.TaskStopCodeTaskFailedToStart {
		t.Errorf("stop code %s, want TaskFailedToStart", task.StopCode)
	}
	if c := task.Containers[0]; c.ExitCode != nil || aws.ToString(c.RuntimeId) != "" {
		t.Errorf("the container ran: exit code %s, runtime %q", code(c.ExitCode), aws.ToString(c.RuntimeId))
	}
	if out := w.out.of(taskID(arn)); out != "" {
		t.Errorf("the process wrote %q", out)
	}
	return aws.ToString(task.StoppedReason)
}

func TestServer_Task_SecretTheExecutionRoleMayNotReadFailsTheStart(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("exec-no-secrets"),
		Secrets: map[string]string{"STORAGE_ACCESS_KEY_ID": w.secretARN + ":accessKeyId::"}})
	reason := w.failedToStart(t, "denied-secret")
	prefix := "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret " + w.secretARN + " from secrets manager: AccessDeniedException: "
	if !strings.HasPrefix(reason, prefix) || !strings.Contains(reason, "assumed-role/exec-no-secrets/") || !strings.Contains(reason, "secretsmanager:GetSecretValue") {
		t.Errorf("stopped reason %q, want %q… naming the execution role's session and the action", reason, prefix)
	}

	// A json key the secret does not hold fails the same way, without quoting the secret.
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec"),
		Secrets: map[string]string{"TOKEN": w.secretARN + ":token::"}})
	reason = w.failedToStart(t, "missing-key")
	if want := "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): retrieved secret from Secrets Manager did not contain json key token"; reason != want {
		t.Errorf("stopped reason %q, want %q", reason, want)
	}
	if strings.Contains(w.logs.String(), secretKeyValue) {
		t.Errorf("a secret's value is in the log")
	}
}

func TestServer_Task_AwslogsDeniedFailsTheStart(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("exec-no-logs"),
		LogGroup: logGroup, LogStreamPrefix: "sandbox"})
	reason := w.failedToStart(t, "denied-logs")
	prefix := "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed to create Cloudwatch log stream: AccessDeniedException: "
	if !strings.HasPrefix(reason, prefix) || !strings.Contains(reason, "logs:CreateLogStream on resource: arn:aws:logs:"+region+":"+account+":log-group:"+logGroup+":log-stream:sandbox/agent/") {
		t.Errorf("stopped reason %q, want %q… on the task's stream", reason, prefix)
	}
}

// An execution role that may create the stream but not put events: the task runs, as
// on Fargate, and its output goes nowhere, as CloudWatch would never receive it.
func TestServer_Task_AwslogsPutDeniedDropsTheOutput(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("exec-create-only"),
		LogGroup: logGroup, LogStreamPrefix: "sandbox"})
	arn := aws.ToString(w.run(t, workerInput("put-denied")).TaskArn)
	ip := privateIP(w.waitStatus(t, arn, "RUNNING"))
	w.whoami(t, ip)
	// The stack's writer is asked for before the process starts: a running task that was
	// never given one writes nowhere.
	if w.out.given(taskID(arn)) {
		t.Errorf("the output of a task whose logs may not be put reaches the stack: %q", w.out.of(taskID(arn)))
	}
	if lines := w.logs.With(t, "msg", "awslogs may not put log events: the task's output is dropped"); len(lines) != 1 || lines[0]["taskArn"] != arn {
		t.Errorf("log lines %v, want one naming the task", lines)
	}
}

// Without a session issuer, a definition with roles cannot run: ECS could not assume them.
func TestServer_RunTask_RolesWithoutSessionIssuer(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.register(t, ecslocal.TaskDefinition{Family: "worker", TaskRole: roleARN("sandbox-task")})
	in := runInput("no-issuer")
	in.TaskDefinition = aws.String("worker")
	_, err := e.ecs.RunTask(context.Background(), in)
	if testkit.ErrorCode(err) != "ClientException" || !strings.Contains(err.Error(), "ECS was unable to assume the role '"+roleARN("sandbox-task")+"'") {
		t.Errorf("RunTask = %v, want ClientException", err)
	}
}

func TestServer_Task_ECRPullNeedsTheExecutionRole(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec"),
		Image: account + ".dkr.ecr." + region + ".amazonaws.com/sandgate/sandbox:v1"})
	reason := w.failedToStart(t, "denied-ecr")
	prefix := "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve ecr registry auth: service call has been retried 3 time(s): AccessDeniedException: "
	if !strings.HasPrefix(reason, prefix) || !strings.Contains(reason, "ecr:GetAuthorizationToken on resource: *") {
		t.Errorf("stopped reason %q, want %q…", reason, prefix)
	}
}

// When the task stops, every key it was given is refused and the endpoint forgets it.
func TestServer_Task_SessionsRevokedAtStop(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec")})
	arn := aws.ToString(w.run(t, workerInput("revoked")).TaskArn)
	ip := privateIP(w.waitStatus(t, arn, "RUNNING"))
	uri, _, creds := w.credentialsOf(t, ip)
	leaked := credsOf(creds)
	out, err := w.stsAs(leaked)
	if err != nil || aws.ToString(out.Arn) != "arn:aws:sts::"+account+":assumed-role/sandbox-task/"+taskID(arn) {
		t.Fatalf("the task's credentials before the stop: %v %v", out, err)
	}
	if _, err := w.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	w.waitStatus(t, arn, "STOPPED")
	if _, err := w.stsAs(leaked); testkit.ErrorCode(err) != "InvalidClientTokenId" {
		t.Errorf("the task's key after the stop: %v, want InvalidClientTokenId", err)
	}
	if code, body := fetch(t, uri); code != http.StatusBadRequest || strings.Contains(string(body), "AccessKeyId") {
		t.Errorf("the credentials endpoint after the stop: %d %s", code, body)
	}
}

func TestServer_RegisterTaskDefinition_RefusesStaticKeysAndMissingExecutionRole(t *testing.T) {
	t.Parallel()
	s := ecslocal.NewServer(t.TempDir())
	base := func() ecslocal.TaskDefinition {
		return ecslocal.TaskDefinition{Family: "agent", ContainerName: "agent", Command: []string{"/bin/true"},
			TaskRole: roleARN("task"), ExecutionRole: roleARN("exec")}
	}
	secret := "arn:aws:secretsmanager:" + region + ":" + account + ":secret:storage-AbCdEf"
	for name, change := range map[string]func(*ecslocal.TaskDefinition){
		"static key in the environment": func(td *ecslocal.TaskDefinition) { td.Environment = map[string]string{"AWS_ACCESS_KEY_ID": "x"} },
		"session token as a secret":     func(td *ecslocal.TaskDefinition) { td.Secrets = map[string]string{"AWS_SESSION_TOKEN": secret} },
		"credentials URI": func(td *ecslocal.TaskDefinition) {
			td.Environment = map[string]string{"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://x"}
		},
		"secrets without an execution role": func(td *ecslocal.TaskDefinition) {
			td.ExecutionRole, td.Secrets = "", map[string]string{"S": secret}
		},
		"awslogs without an execution role": func(td *ecslocal.TaskDefinition) { td.ExecutionRole, td.LogGroup = "", logGroup },
		"ECR image without an execution role": func(td *ecslocal.TaskDefinition) {
			td.ExecutionRole, td.Image = "", account+".dkr.ecr."+region+".amazonaws.com/sandbox:latest"
		},
		"a parameter store secret": func(td *ecslocal.TaskDefinition) {
			td.Secrets = map[string]string{"S": "arn:aws:ssm:us-east-1:000000000000:parameter/x"}
		},
		"a secret with two extra fields": func(td *ecslocal.TaskDefinition) { td.Secrets = map[string]string{"S": secret + ":key:AWSCURRENT"} },
		"a variable both plain and secret": func(td *ecslocal.TaskDefinition) {
			td.Environment, td.Secrets = map[string]string{"S": "x"}, map[string]string{"S": secret}
		},
		"a task role that is no role ARN": func(td *ecslocal.TaskDefinition) { td.TaskRole = "sandbox-task" },
	} {
		td := base()
		change(&td)
		if _, err := s.RegisterTaskDefinition(td); !errors.Is(err, ecslocal.ErrInvalidTaskDefinition) {
			t.Errorf("%s: RegisterTaskDefinition = %v, want ErrInvalidTaskDefinition", name, err)
		}
	}
	good := base()
	good.Secrets = map[string]string{"S": secret + ":key::", "T": secret}
	good.LogGroup = logGroup
	if _, err := s.RegisterTaskDefinition(good); err != nil {
		t.Errorf("a valid definition: %v", err)
	}
}

func TestServer_Start_RefusesAnAuthorizerWithoutAuthority(t *testing.T) {
	t.Parallel()
	s := ecslocal.NewServer(t.TempDir())
	s.Authorizer = identity.AuthorizerFunc(func(context.Context, identity.Request) error { return nil })
	if err := s.Start(); !errors.Is(err, ecslocal.ErrInvalidConfig) {
		t.Errorf("Start = %v, want ErrInvalidConfig", err)
		_ = s.Close(context.Background())
	}
	s = ecslocal.NewServer(t.TempDir())
	s.Sessions = sessionsFunc(func() {})
	if err := s.Start(); !errors.Is(err, ecslocal.ErrInvalidConfig) {
		t.Errorf("Start with Sessions and no Authority = %v, want ErrInvalidConfig", err)
		_ = s.Close(context.Background())
	}
}

type sessionsFunc func()

func (sessionsFunc) IssueForService(context.Context, string, string, string, time.Duration) (identity.Credentials, *identity.Principal, error) {
	return identity.Credentials{}, nil, fmt.Errorf("not issued")
}
