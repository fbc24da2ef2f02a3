package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/r2creds"
	"github.com/sandgate/sandgate/internal/state"
)

// Names the local stack gives what CloudFormation would name in AWS.
const (
	// LocalImage is the sandbox image the template's SandboxImage names locally: an
	// ECR image, whose pull ECS authorises with the task's execution role. The agent
	// binary stands in for it.
	LocalImage = AccountID + ".dkr.ecr." + Region + ".amazonaws.com/sandgate-sandbox:local"
	// sandboxLogStreamPrefix is the template's awslogs-stream-prefix.
	sandboxLogStreamPrefix = "sandbox"
	Region                 = ecslocal.DefaultRegion
	AccountID              = ecslocal.DefaultAccountID
	StackName              = "sandgate-local"
	// APIID is the WebSocket API's id: MANAGEMENT_ENDPOINT values built from it in the
	// template are served by the local gateway.
	APIID = "sandgatews"
	// Stage replaces the template's default stage name, so local URLs say where they lead.
	Stage = "local"
	// DefaultAddr is where `make dev` serves the gateway (the demo page, the WebSocket
	// stage and the management API), and DefaultHTTPAddr its HTTP API; tests use free ports.
	DefaultAddr     = "127.0.0.1:8700"
	DefaultHTTPAddr = "127.0.0.1:8701"
)

// Options configures a stack.
type Options struct {
	// Root holds everything the stack keeps on disk (DynamoDB and S3 data when Persist,
	// each task's directory). Empty: a temporary directory removed by Close.
	Root string
	// Persist keeps DynamoDB and S3 data in Root across runs; otherwise both run in memory.
	Persist bool
	// Template is the path of template.yaml.
	Template string
	// BuildDir holds <name>/bootstrap for each function (make build-local).
	BuildDir string
	// Agent is the sandbox agent binary that stands in for the task's image; empty
	// leaves tasks unable to start (their RunTask still succeeds, as with a bad image).
	Agent string
	// Functions runs the template's functions behind the gateway; false runs the
	// emulators and tasks only (tests of the agent).
	Functions bool
	// Schedules runs the template's scheduled functions on their schedule (make dev).
	Schedules bool
	// Params overrides template parameters (after the local defaults).
	Params map[string]string
	// Env is added to every function's and task's environment, under the template's values.
	Env map[string]string
	// Overrides replace the template's values in every function's and task's environment
	// (tests shorten intervals the template's parameters bound for production).
	Overrides map[string]string
	// Addr is the gateway's address and HTTPAddr the HTTP API's (127.0.0.1:0 when empty).
	Addr, HTTPAddr string
	// LaunchDelay is the emulated time from RunTask to the task's process start.
	LaunchDelay time.Duration
	// AddressPool is where task addresses come from, inside 127.0.0.0/8. Zero picks a
	// random /24, so stacks running at once on one machine (test packages in parallel,
	// make dev) do not hand their tasks addresses another stack's agents listen on.
	AddressPool netip.Prefix
	// AccountConcurrency is the Lambda account's concurrent-executions quota the
	// functions share (lambdart.Runtime.AccountConcurrency); zero means AWS's default,
	// lambdart.DefaultAccountConcurrency; negative, none. UnreservedMinimum is what
	// reservations must leave (zero: AWS's 100).
	AccountConcurrency, UnreservedMinimum int
	// NewConnectionRate, when positive, is API Gateway's account-wide quota of new
	// WebSocket connections per second (apigw.Server.NewConnectionRate); zero means
	// apigw.DefaultNewConnectionRate (AWS's 500); negative, none.
	NewConnectionRate float64
	// SequentialDispatch makes the gateway invoke the integrations of one connection's
	// frames one at a time, in order. API Gateway does not (see apigw.Server); tests of
	// the order sandgate keeps turn it on so the order frames arrive in is defined.
	SequentialDispatch bool
	// R2 serves the bucket as Cloudflare R2 and deploys the template for R2 (r2.go):
	// the parent API token's key in Secrets Manager, the vendor minting each sandbox
	// temporary credentials for its prefix, Cleanup using the parent key. No IAM
	// decides storage requests then, as none does in R2.
	R2 bool
	// ModelAPI, when set, deploys the template with a model API whose key is in the
	// stack's Secrets Manager (modelapi.go).
	ModelAPI *ModelAPI
	// NoIAM turns policy enforcement off, for debugging only: every signed caller may
	// do anything. Signatures are still checked. No test sets it.
	NoIAM bool
	// Recorder, when set, records which template statement allowed each call.
	Recorder *iampolicy.Recorder
	// Log receives the emulators' structured logs; Output the processes' output (tagged
	// per function and task). Nil discards.
	Log    *slog.Logger
	Output io.Writer
}

// Stack is a running local application.
type Stack struct {
	DynamoDB *dynamodblocal.Server
	S3       *s3local.Server
	ECS      *ecslocal.Server
	Gateway  *apigw.Server
	Runtime  *lambdart.Runtime
	Template *template.Template

	// Table, Bucket and Cluster are the local names of the template's resources.
	Table, Bucket, Cluster string
	// TaskDefinition is the registered sandbox task definition's ARN.
	TaskDefinition string
	// Store is a client of the table, for tests and tools.
	Store *state.Store
	// AWS is a configuration whose clients reach the emulators (set a BaseEndpoint per
	// client, or use the Endpoints), signed with the operator's credentials.
	AWS aws.Config
	// Endpoints maps AWS_ENDPOINT_URL_* names to the emulators' URLs.
	Endpoints map[string]string
	// Root is where the stack keeps its files.
	Root string
	// R2 is the parent R2 API token (its S3 key, the account and the public endpoint)
	// in R2 mode (Options.R2), nil otherwise: what an operator of an R2 deployment
	// holds, and the stack's S3Client signs with.
	R2 *r2creds.Parent
	// AWSEndpoint serves every emulated service at one address, routed by the service
	// a request's signature names (samenv.go): what AWS_ENDPOINT_URL points at in SAMEnv.
	AWSEndpoint string

	ids    *identities
	image  string
	events *eventRouter // the template's EventBridge rules (events.go)
	// urlListeners holds each function URL's listener, by logical id, from the template's
	// first reading until the function that serves it is added (then lambdart owns it).
	urlListeners map[string]net.Listener
	log          *slog.Logger
	tempRoot     bool
	invoke       *http.Server
	// awsEndpoint serves AWSEndpoint; functionEnv is each function's environment as
	// the runtime runs it, by logical id (SAMEnv).
	awsEndpoint *http.Server
	functionEnv map[string]map[string]string
	stop        context.CancelFunc
	sched       sync.WaitGroup
}

// Start runs the stack. On error everything started so far is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	s := &Stack{log: o.Log, Root: o.Root, Endpoints: map[string]string{}}
	if s.log == nil {
		s.log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if o.Output == nil {
		o.Output = io.Discard
	}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	if s.Root == "" {
		if s.Root, err = os.MkdirTemp("", "sandgate-stack-"); err != nil {
			return nil, fmt.Errorf("stack root: %w", err)
		}
		s.tempRoot = true
	}
	if s.Root, err = filepath.Abs(s.Root); err != nil {
		return nil, fmt.Errorf("stack root: %w", err)
	}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return nil, fmt.Errorf("stack root: %w", err)
	}
	if s.tempRoot {
		// MkdirTemp's 0700 would keep each task's workload (under a uid of its own)
		// from its workspace under tasks/.
		if err := os.Chmod(s.Root, 0o711); err != nil {
			return nil, fmt.Errorf("stack root: %w", err)
		}
	}
	s.Table, s.Cluster, s.Bucket = StackName+"-table", StackName, StackName+"-bucket"

	if err := s.startIdentity(ctx, o); err != nil {
		return nil, err
	}
	// Read the template twice: first to learn the task definition's family and the
	// functions' names, which references elsewhere resolve to; then with every
	// reference answered.
	var storage map[string]string
	if o.R2 {
		if storage, err = s.startR2(); err != nil {
			return nil, err
		}
	}
	model, err := s.startModelAPI(o.ModelAPI)
	if err != nil {
		return nil, err
	}
	for k, v := range model {
		if storage == nil {
			storage = map[string]string{}
		}
		storage[k] = v
	}
	params := localParams(s.Bucket, storage, o.Params)
	s.image = params["SandboxImage"]
	res := &resolver{stack: s, secrets: s.ids.secrets, types: map[string]string{}, functionNames: map[string]string{},
		functionURLs: map[string]string{}}
	doc, err := template.LoadDocument(o.Template, template.Options{Parameters: params, Resolver: res})
	if err != nil {
		return nil, err
	}
	for id, r := range doc.Resources {
		res.types[id] = r.Type
	}
	first, err := template.Load(o.Template, template.Options{Parameters: params, Resolver: res, TaskDefinitions: true})
	if err != nil {
		return nil, err
	}
	td := first.TaskDefinitions[sandboxTaskDefinition]
	if td == nil || len(td.Containers) == 0 {
		return nil, fmt.Errorf("template: no %s with a container", sandboxTaskDefinition)
	}
	res.taskDef = taskDefinitionARN(td.Family)
	for id, f := range first.Functions {
		res.functionNames[id] = f.FunctionName
	}
	// A function URL is known before its function runs (a task definition may name
	// it), as in AWS: each gets its listener now, which lambdart serves once the
	// function is added (kept open meanwhile, so no other process takes the port).
	if s.urlListeners, err = listenFunctionURLs(first); err != nil {
		return nil, err
	}
	for id, ln := range s.urlListeners {
		res.functionURLs[id] = "http://" + ln.Addr().String() + "/"
	}
	tpl, err := template.Load(o.Template, template.Options{Parameters: params, Resolver: res, TaskDefinitions: true, Roles: true})
	if err != nil {
		return nil, err
	}
	s.Template = tpl
	if s.events, err = loadEvents(o.Template, template.Options{Parameters: params, Resolver: res}, tpl, s.log); err != nil {
		return nil, err
	}
	if err := s.ids.addRoles(tpl); err != nil {
		return nil, err
	}
	if err := s.applyAccounts(ctx, doc); err != nil {
		return nil, err
	}

	if err := s.startStorage(ctx, o); err != nil {
		return nil, err
	}
	if err := s.startECS(o, tpl); err != nil {
		return nil, err
	}
	if err := s.startLambda(o, tpl); err != nil {
		return nil, err
	}
	if err := s.startAWSEndpoint(); err != nil {
		return nil, err
	}
	if o.Functions {
		s.events.attach(s.Runtime)
	}
	cfg, err := s.operatorConfig(ctx)
	if err != nil {
		return nil, err
	}
	s.AWS = cfg
	ddb := dynamodb.NewFromConfig(cfg)
	if err := ensureTable(ctx, ddb, s.Table); err != nil {
		return nil, err
	}
	s.Store = state.New(ddb, s.Table)
	if o.Functions && o.Schedules {
		s.startSchedules(tpl)
	}
	return s, nil
}

func localParams(bucket string, storage, extra map[string]string) map[string]string {
	p := map[string]string{
		"StageName":  Stage,
		"BucketName": bucket,
		// An ECR image, so the task's start asks what Fargate's pull asks of the
		// execution role.
		"SandboxImage":             LocalImage,
		"SubnetIds":                "subnet-0local",
		"FunctionSecurityGroupIds": "sg-0localfunctions",
		"SandboxSecurityGroupIds":  "sg-0localsandboxes",
		"StoragePathStyle":         "true",
	}
	for k, v := range storage {
		p[k] = v
	}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

func (s *Stack) startStorage(ctx context.Context, o Options) error {
	id := s.ids
	dopts := dynamodblocal.Options{Logger: s.log, Output: prefixed(o.Output, "[dynamodb] "),
		Authority: id.authority, Authorizer: id.authorizer}
	sopts := s3local.Config{Bucket: s.Bucket, Log: s.log, Authority: id.authority, Authorizer: id.authorizer}
	if s.R2 != nil {
		sopts.Authority, sopts.Authorizer, sopts.R2 = nil, nil, s.r2Config()
	}
	if o.Persist {
		dopts.DBPath = filepath.Join(s.Root, "dynamodb")
		sopts.Dir = filepath.Join(s.Root, "s3")
	}
	ddb, err := dynamodblocal.Start(ctx, dopts)
	if err != nil {
		return err
	}
	s.DynamoDB = ddb
	s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"] = ddb.Endpoint()

	s3, err := s3local.Start(sopts)
	if err != nil {
		return err
	}
	s.S3 = s3
	s.Endpoints["AWS_ENDPOINT_URL_S3"] = s3.URL()
	return nil
}

// baseEnv is what every function and task gets: the region and the emulators'
// endpoints. Nothing else of this process's environment reaches them, as in AWS; their
// credentials are their roles', which Lambda and ECS hand out.
func (s *Stack) baseEnv(o Options) map[string]string {
	env := map[string]string{
		"AWS_REGION":                Region,
		"AWS_DEFAULT_REGION":        Region,
		"AWS_EC2_METADATA_DISABLED": "true",
	}
	for k, v := range s.Endpoints {
		env[k] = v
	}
	for k, v := range o.Env {
		env[k] = v
	}
	return env
}

func (s *Stack) startECS(o Options, tpl *template.Template) error {
	tasks := filepath.Join(s.Root, tasksDir)
	if err := os.MkdirAll(tasks, 0o755); err != nil {
		return fmt.Errorf("task root: %w", err)
	}
	e := ecslocal.NewServer(tasks)
	// Each task apart from the others and from this machine, as on Fargate, wherever
	// this process may (it says at start what it cannot): the workload under ids of
	// its task's own, the task's files and the stack's out of every other's reach.
	e.Isolate = true
	e.WorkloadUIDVariable, e.WorkloadGIDVariable = agent.EnvWorkloadUID, agent.EnvWorkloadGID
	if os.Geteuid() == 0 {
		if err := lockDownRoot(s.Root); err != nil {
			return err
		}
	}
	e.Logger = s.log
	e.Clusters = []string{s.Cluster}
	e.LaunchDelay = o.LaunchDelay
	// RunTask's and Fargate's rates, as AWS enforces them: a storm, or a refill that
	// does not give way, meets ThrottlingException here as it would there.
	e.Limits = &ecslocal.FargateLimits
	e.AddressPool = o.AddressPool
	if !e.AddressPool.IsValid() {
		e.AddressPool = ecslocal.RandomAddressPool()
	}
	e.Output = func(t ecslocal.TaskInfo) io.Writer { return prefixed(o.Output, "[task "+t.ID[:8]+"] ") }
	e.Authority, e.Authorizer, e.Sessions = s.ids.authority, s.ids.authorizer, s.ids.sessions
	e.SecretsEndpoint = s.Endpoints["AWS_ENDPOINT_URL_SECRETS_MANAGER"]
	env := s.baseEnv(o)
	// Tasks run native binaries, which need a PATH (a workload may be a script).
	env["PATH"] = os.Getenv("PATH")
	e.Env = env
	e.Events = s.events.deliver
	s.ECS = e
	if err := e.Start(); err != nil {
		s.ECS = nil
		return err
	}
	s.Endpoints["AWS_ENDPOINT_URL_ECS"] = e.Endpoint()

	td := tpl.TaskDefinitions[sandboxTaskDefinition]
	c := td.Containers[0]
	var port int
	if len(c.Ports) > 0 {
		port = c.Ports[0]
	}
	agent := o.Agent
	if agent == "" {
		// Like an image that cannot be pulled: RunTask succeeds, the task fails to start.
		agent = filepath.Join(s.Root, "no-agent-built")
	}
	tenv := localMounts(c)
	s.dialedEndpoints(tenv)
	for k, v := range o.Overrides {
		tenv[k] = v
	}
	arn, err := e.RegisterTaskDefinition(ecslocal.TaskDefinition{
		Family: td.Family, ContainerName: c.Name, Command: []string{agent}, Image: s.image,
		Environment: tenv, Port: port, StopTimeout: c.StopTimeout,
		CPU: td.Cpu, Memory: td.Memory,
		TaskRole: td.TaskRole, ExecutionRole: td.ExecutionRole, Secrets: c.Secrets,
		LogGroup: c.LogGroup, LogStreamPrefix: sandboxLogStreamPrefix,
		User: c.User, AddCapabilities: c.AddCapabilities, DropCapabilities: c.DropCapabilities,
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", sandboxTaskDefinition, err)
	}
	if arn != taskDefinitionARN(td.Family) {
		return fmt.Errorf("register %s: got %s, want %s (what the functions were told)", sandboxTaskDefinition, arn, taskDefinitionARN(td.Family))
	}
	s.TaskDefinition = arn
	return nil
}

// localMounts maps the container's volume paths into the task's own directory: a
// variable naming /home/sandbox/data (a mount point) becomes mnt/data, relative to the
// task's working directory, so tasks never share files, as on Fargate.
func localMounts(c *template.Container) map[string]string {
	env := make(map[string]string, len(c.Environment))
	for k, v := range c.Environment {
		for path, volume := range c.Mounts {
			if v == path || strings.HasPrefix(v, path+"/") {
				v = filepath.Join("mnt", volume, strings.TrimPrefix(v, path))
				break
			}
		}
		env[k] = v
	}
	return env
}

func (s *Stack) startLambda(o Options, tpl *template.Template) error {
	rt := lambdart.New(s.log, o.Output)
	switch {
	case o.AccountConcurrency == 0:
		rt.AccountConcurrency = lambdart.DefaultAccountConcurrency
	case o.AccountConcurrency > 0:
		rt.AccountConcurrency = o.AccountConcurrency
	}
	rt.UnreservedMinimum = o.UnreservedMinimum
	rt.Region, rt.AccountID = Region, AccountID
	rt.Sessions, rt.Authority, rt.Authorizer = s.ids.sessions, s.ids.authority, s.ids.authorizer
	s.Runtime = rt

	// The Lambda Invoke API, for functions that invoke functions (asynchronous notices).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("lambda invoke api: %w", err)
	}
	s.invoke = &http.Server{Handler: rt.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go s.invoke.Serve(ln)
	s.Endpoints["AWS_ENDPOINT_URL_LAMBDA"] = "http://" + ln.Addr().String()

	cfg, err := apigw.FromTemplate(tpl)
	if err != nil {
		return err
	}
	if cfg.WebSocket != nil {
		cfg.WebSocket.APIID = APIID
	}
	nameRoutes(cfg, tpl)
	gw := apigw.New(cfg, rt, s.log)
	gw.Region, gw.AccountID = Region, AccountID
	gw.Authority, gw.Authorizer = s.ids.authority, s.ids.authorizer
	gw.SequentialDispatch = o.SequentialDispatch
	switch {
	case o.NewConnectionRate == 0:
		gw.NewConnectionRate = apigw.DefaultNewConnectionRate
	case o.NewConnectionRate > 0:
		gw.NewConnectionRate = o.NewConnectionRate
	}
	if o.Addr != "" {
		gw.Addr = o.Addr
	}
	if o.HTTPAddr != "" {
		gw.HTTPAddr = o.HTTPAddr
	}
	if err := gw.Start(); err != nil {
		return err
	}
	s.Gateway = gw

	env := s.baseEnv(o)
	rt.Env = env
	if !o.Functions {
		// No function serves them: a call is refused at once, as before a deploy.
		closeListeners(s.urlListeners)
		return nil
	}
	awsEndpoint := fmt.Sprintf("https://%s.execute-api.%s.amazonaws.com", APIID, Region)
	local := strings.TrimSuffix(strings.TrimSuffix(gw.ManagementEndpoint(), "/"), "/"+Stage)
	var missing []string
	for _, f := range tpl.Functions {
		path := filepath.Join(o.BuildDir, f.Name, "bootstrap")
		if _, err := os.Stat(path); err != nil {
			missing = append(missing, path)
			continue
		}
		fenv := make(map[string]string, len(f.Environment))
		for k, v := range f.Environment {
			// The template builds the management endpoint from the API's AWS host name;
			// locally that API is served by the gateway.
			fenv[k] = strings.ReplaceAll(v, awsEndpoint, local)
		}
		s.dialedEndpoints(fenv)
		for k, v := range o.Overrides {
			fenv[k] = v
		}
		if s.functionEnv == nil {
			s.functionEnv = map[string]map[string]string{}
		}
		s.functionEnv[f.LogicalID] = fenv
		if err := rt.Add(lambdart.Function{
			Name: FunctionName(f), Path: path, Handler: f.Handler, Timeout: f.Timeout,
			MemoryMB: f.MemorySize, LogFormat: f.LogFormat, LogLevel: f.LogLevel, Env: fenv,
			AsyncRetries: f.AsyncRetries,
			Role:         f.Role, LogGroup: f.LogGroup, InVPC: f.InVPC, URLAuthType: f.URLAuthType,
			URLListener: s.urlListeners[f.LogicalID],
		}); err != nil {
			return err
		}
		// The runtime serves (and closes) it now.
		delete(s.urlListeners, f.LogicalID)
		if n := f.ReservedConcurrency; n > 0 {
			// ReservedConcurrentExecutions, as CloudFormation sets it.
			if err := rt.SetReservedConcurrency(FunctionName(f), &n); err != nil {
				return err
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("functions not built (run make build-local): %s", strings.Join(missing, ", "))
	}
	return nil
}

// listenFunctionURLs opens a loopback listener for the function URL of each function
// that has one.
func listenFunctionURLs(tpl *template.Template) (map[string]net.Listener, error) {
	lns := map[string]net.Listener{}
	for id, f := range tpl.Functions {
		if f.URLAuthType == "" {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeListeners(lns)
			return nil, fmt.Errorf("function url of %s: %w", id, err)
		}
		lns[id] = ln
	}
	return lns, nil
}

// closeListeners closes the function URL listeners no function took over.
func closeListeners(lns map[string]net.Listener) {
	for id, ln := range lns {
		ln.Close()
		delete(lns, id)
	}
}

func ensureTable(ctx context.Context, ddb *dynamodb.Client, name string) error {
	_, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		return state.CreateTable(ctx, ddb, name)
	}
	if err != nil {
		return fmt.Errorf("describe table %s: %w", name, err)
	}
	// A table persisted before the Sandboxes index gets it, as CloudFormation adds it
	// to a deployed one; cleanup then backfills the records written before it.
	return state.EnsureSandboxIndex(ctx, ddb, name)
}

// SignURL returns a signed WebSocket URL for userID, signed with the local development
// secret the stack's Secrets Manager holds under the template's SigningSecretName.
func (s *Stack) SignURL(userID string) (string, error) {
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		return "", err
	}
	return signer.SignURL(s.Gateway.WebSocketURL(), userID)
}

// Close stops everything, in an order that lets work finish: the schedules, then the
// tasks while the gateway and storage still serve them (each agent gets SIGTERM, tells
// its clients it is stopping and syncs), then the gateway and the functions, then
// storage. It is safe to call on a partly started stack, and more than once.
func (s *Stack) Close(ctx context.Context) error {
	if s.stop != nil {
		s.stop()
		s.sched.Wait()
		s.stop = nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if s.ECS != nil {
		add(s.ECS.Close(ctx))
		s.ECS = nil
	}
	if s.Gateway != nil {
		add(s.Gateway.Close())
		s.Gateway = nil
	}
	if s.invoke != nil {
		add(s.invoke.Close())
		s.invoke = nil
	}
	if s.awsEndpoint != nil {
		add(s.awsEndpoint.Close())
		s.awsEndpoint = nil
	}
	closeListeners(s.urlListeners)
	if s.Runtime != nil {
		add(s.Runtime.Close())
		s.Runtime = nil
	}
	if s.S3 != nil {
		add(s.S3.Close())
		s.S3 = nil
	}
	if s.DynamoDB != nil {
		add(s.DynamoDB.Stop())
		s.DynamoDB = nil
	}
	if s.ids != nil {
		add(s.ids.close())
		s.ids = nil
	}
	if s.tempRoot {
		add(os.RemoveAll(s.Root))
		s.tempRoot = false
	}
	return errors.Join(errs...)
}

// FunctionName is the name a function runs under, as in AWS: its FunctionName when the
// template sets one (functions that invoke it use that name), else its logical id.
func FunctionName(f *template.Function) string {
	if f.FunctionName != "" {
		return f.FunctionName
	}
	return f.LogicalID
}

// nameRoutes points the gateway's routes at the functions' running names.
func nameRoutes(cfg apigw.Config, tpl *template.Template) {
	name := func(id string) string {
		if f := tpl.Functions[id]; f != nil {
			return FunctionName(f)
		}
		return id
	}
	if ws := cfg.WebSocket; ws != nil {
		for key, r := range ws.Routes {
			r.Function = name(r.Function)
			if r.Authorizer != nil {
				a := *r.Authorizer
				a.Function = name(a.Function)
				r.Authorizer = &a
			}
			ws.Routes[key] = r
		}
	}
	if h := cfg.HTTP; h != nil {
		for i := range h.Routes {
			h.Routes[i].Function = name(h.Routes[i].Function)
		}
	}
}

// Name returns the name the function with logicalID runs under in the Runtime.
func (s *Stack) Name(logicalID string) string {
	if f := s.Template.Functions[logicalID]; f != nil {
		return FunctionName(f)
	}
	return logicalID
}
