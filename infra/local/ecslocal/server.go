package ecslocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// Defaults of a Server.
const (
	// DefaultRegion matches awsconf.Loopback, so ARNs look like the ones clients expect.
	DefaultRegion = "us-east-1"
	// DefaultAccountID is the account in every ARN.
	DefaultAccountID = "000000000000"
	// DefaultCluster is the cluster ECS assumes when a request names none.
	DefaultCluster = "default"
	// DefaultAddr is where the ECS API listens.
	DefaultAddr = "127.0.0.1:0"
	// DefaultMetadataAddr is where the task metadata endpoints listen.
	DefaultMetadataAddr = "127.0.0.1:0"
	// DefaultStoppedRetention is how long ECS keeps stopped tasks describable (about an hour).
	DefaultStoppedRetention = time.Hour
	// DefaultTokenTTL is how long a RunTask clientToken is remembered.
	DefaultTokenTTL = 24 * time.Hour
	// DefaultStopTimeout is Fargate's default wait between SIGTERM and SIGKILL.
	DefaultStopTimeout = 30 * time.Second
	// MaxStopTimeout is the longest stop timeout Fargate allows.
	MaxStopTimeout = 120 * time.Second
	// DefaultCPU and DefaultMemory size a task definition that names none (0.25 vCPU, 512 MiB).
	DefaultCPU    = 256
	DefaultMemory = 512
	// DefaultAddressPool holds the task addresses. All of 127.0.0.0/8 routes to lo on
	// Linux; 127.0.0.1 itself, which the emulators use, and .0/.255 addresses are never
	// handed out.
	DefaultAddressPool = "127.0.0.0/16"
	// DefaultWaitDelay bounds how long a task's output is drained after its process exits,
	// so a grandchild holding stdout cannot keep a stopped task from stopping.
	DefaultWaitDelay = time.Second
)

// RandomAddressPool returns a random /24 inside 127/8 (never 127.0.0.0/24, where the
// emulators listen): servers running at once on one machine — test binaries in
// parallel, make dev — each given their own never hand out an address another's tasks
// listen on.
func RandomAddressPool() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(256)), 0}), 24)
}

// Log keys this package adds to internal/logging's.
const (
	logOperation = "operation"
	logPid       = "pid"
	logAddress   = "address"
	logExitCode  = "exitCode"
	logEndpoint  = "endpoint"
	logMetadata  = "metadataEndpoint"
	logVariable  = "variable"
	logRole      = "role"
	logPrincipal = "principal"
	logPath      = "path"
	// logNotIsolated lists what of the tasks' isolation is missing.
	logNotIsolated = "notIsolated"
)

// Server is the ECS endpoint and the task metadata endpoint of the local stack. Set the
// exported fields before Start; the fault and delay switches may be used at any time.
type Server struct {
	// Logger receives one JSON line per task state change and per refused request.
	Logger *slog.Logger
	// Region and AccountID appear in every ARN (DefaultRegion, DefaultAccountID).
	Region, AccountID string
	// AvailabilityZone is reported for every task (default: Region + "a").
	AvailabilityZone string
	// Clusters are the cluster names that exist ([DefaultCluster] when empty).
	Clusters []string
	// Addr and MetadataAddr are the loopback listen addresses of the two endpoints.
	Addr, MetadataAddr string
	// AddressPool is where task addresses come from; it must lie inside 127.0.0.0/8.
	// Tests running concurrently in other processes should pick distinct pools.
	AddressPool netip.Prefix
	// Env is set in every task's environment under the task definition's own variables:
	// what the stack passes to every task (endpoints, credentials, PATH, HOME). Nothing of
	// this process's environment is inherited otherwise.
	Env map[string]string
	// Output returns where a task's stdout and stderr go (io.Discard when nil or when it
	// returns nil). It is called once per task, just before the process starts (so the
	// TaskInfo it gets has no pid yet).
	Output func(TaskInfo) io.Writer
	// LaunchDelay is the time from RunTask until the process starts, spent half in
	// PROVISIONING and half in PENDING, to rehearse Fargate's cold starts; see SetLaunchDelay.
	LaunchDelay time.Duration
	// StoppedRetention is how long stopped tasks stay describable (DefaultStoppedRetention).
	StoppedRetention time.Duration
	// KeepDataDirs keeps a task's data directory after it stops. Fargate discards ephemeral
	// storage with the task, so by default the directory is removed.
	KeepDataDirs bool

	// Authority, when set, checks the SigV4 signature (identity.ECS) of every API
	// request and answers a refusal as ECS does; nil checks nothing. Region and AccountID
	// default to its own. Task sessions are judged by its clock (Authority.Now) and
	// revoked in it when their task stops.
	Authority *identity.Authority
	// Authorizer, when set (Authority must be too), authorises every API request as
	// iampolicy.ECS derives it, and what ECS does with a task's execution role when the
	// task starts (iampolicy.ECRPull for an ECR image, iampolicy.LogsWrite for awslogs);
	// nil allows all of it.
	Authorizer identity.Authorizer
	// Sessions issues the sessions of a task's roles as ecs-tasks.amazonaws.com (after
	// the role's trust check), named after the task id. RunTask issues them, so a role
	// the service may not assume is refused there, as ECS refuses it. With Sessions nil
	// a definition with a role cannot run. Sessions must issue in Authority (or, with
	// Authority nil, be an identity.ServiceIssuer, whose Authority is then used).
	Sessions identity.SessionIssuer
	// SessionDuration is the length of each session issued (identity.DefaultSessionDuration
	// when zero). The credentials endpoint replaces a task-role session with less than
	// CredentialsMinValidity left.
	SessionDuration time.Duration
	// SecretsEndpoint is the Secrets Manager endpoint (secretslocal) ECS reads a task's
	// Secrets from, with the execution role's session.
	SecretsEndpoint string

	// Isolate keeps tasks apart from each other and from this machine as Fargate's
	// micro-VMs keep them, as far as this process may (isolation.go): a network and a
	// PID namespace of its own per task, with the metadata and credentials endpoints at
	// 169.254.170.2 inside (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) and the loopback
	// endpoints its environment names forwarded in; its definition's bounding set and
	// user; memory and pids cgroups; a workload uid of its own (below). What cannot be
	// had (this process is not root, no namespaces, no cgroup v1) is said once at Start
	// and by NotIsolated, and tasks run as without it.
	Isolate bool
	// WorkloadUIDVariable and WorkloadGIDVariable, with Isolate, name the variables that
	// tell each task which uid and gid to run its untrusted code under: ids of its own
	// when this process is root (tasks share one kernel: the same uid in two tasks would
	// be one user), this process's own otherwise. They win over the definition's.
	WorkloadUIDVariable, WorkloadGIDVariable string
	// Events, when set, receives each task state change event ECS would send to
	// EventBridge (events.go), in order, from a goroutine of its own.
	Events func(event []byte)
	// Limits, when set, are the RunTask call and task launch rates enforced
	// (limits.go; FargateLimits are AWS's); nil enforces none.
	Limits *Limits

	dataRoot string

	mu       sync.Mutex
	started  bool
	closed   bool
	region   string
	account  string
	zone     string
	clusters map[string]bool
	defs     map[string]map[int]*taskDef // family → revision → definition
	tasks    map[string]*task            // task id → task
	tokens   map[string]*tokenEntry      // cluster + "\x00" + clientToken
	pool     *addrPool
	faults   faultState
	requests []Request
	env      map[string]string
	output   func(TaskInfo) io.Writer
	log      *slog.Logger
	keepDirs bool
	retain   time.Duration
	creds    map[string]*task // credentials id → live task with a task role
	authz    identity.Authorizer
	issuer   identity.SessionIssuer
	sessAuth *identity.Authority // where sessions are judged and revoked
	sessDur  time.Duration
	secrets  string
	iso      *isolation // nil without Isolate
	events   eventQueue
	limits   *limiter
	uidVar   string
	gidVar   string

	wg       sync.WaitGroup // task lifecycles
	hurry    chan struct{}  // closed when Close's context ends: kill without waiting
	hurryOne sync.Once

	ops             map[string]operation
	apiLn, metaLn   net.Listener
	apiSrv, metaSrv *http.Server
	serveErr        chan error
}

// NewServer returns a server whose tasks get fresh data directories under dataRoot.
func NewServer(dataRoot string) *Server {
	return &Server{dataRoot: dataRoot}
}

// Start validates the configuration and starts listening on both endpoints.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("start ecslocal: %w: already started", ErrInvalidConfig)
	}
	if err := s.configure(); err != nil {
		return fmt.Errorf("start ecslocal: %w", err)
	}
	if s.Isolate {
		if err := s.startIsolation(); err != nil {
			return fmt.Errorf("start ecslocal: %w", err)
		}
	}
	apiLn, err := listenLoopback(s.Addr, DefaultAddr)
	if err != nil {
		return fmt.Errorf("start ecslocal: %w", err)
	}
	metaLn, err := listenLoopback(s.MetadataAddr, DefaultMetadataAddr)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("start ecslocal: %w", err)
	}
	s.apiLn, s.metaLn = apiLn, metaLn
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	s.apiSrv = &http.Server{Handler: http.HandlerFunc(s.serveAPI), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.metaSrv = &http.Server{Handler: http.HandlerFunc(s.serveMetadata), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.serveErr = make(chan error, 2)
	for _, p := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{s.apiSrv, apiLn}, {s.metaSrv, metaLn}} {
		go func() {
			if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.serveErr <- err
			}
		}()
	}
	s.started = true
	s.log.Info("ecs endpoint listening", logEndpoint, s.endpoint(), logMetadata, s.metadataEndpoint())
	return nil
}

func (s *Server) configure() error {
	var errs []error
	if s.dataRoot == "" {
		errs = append(errs, errors.New("data root is empty"))
	} else if fi, err := os.Stat(s.dataRoot); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("data root %q is not a directory", s.dataRoot))
	}
	s.region = cmpOr(s.Region, DefaultRegion)
	s.account = cmpOr(s.AccountID, DefaultAccountID)
	if a := s.Authority; a != nil {
		s.region = cmpOr(s.Region, cmpOr(a.Region, DefaultRegion))
		s.account = cmpOr(s.AccountID, cmpOr(a.Account, DefaultAccountID))
		if a.Region != "" && a.Region != s.region || a.Account != "" && a.Account != s.account {
			errs = append(errs, fmt.Errorf("region %s and account %s differ from the authority's %s and %s", s.region, s.account, a.Region, a.Account))
		}
	}
	if s.Authorizer != nil && s.Authority == nil {
		errs = append(errs, errors.New("an Authorizer needs an Authority: requests must be signed to be authorised"))
	}
	s.authz, s.issuer, s.secrets = s.Authorizer, s.Sessions, s.SecretsEndpoint
	s.sessAuth = s.Authority
	if s.sessAuth == nil {
		switch i := s.Sessions.(type) {
		case identity.ServiceIssuer:
			s.sessAuth = i.Authority
		case *identity.ServiceIssuer:
			s.sessAuth = i.Authority
		}
	}
	if s.Sessions != nil && s.sessAuth == nil {
		errs = append(errs, errors.New("Sessions needs an Authority to judge and revoke the sessions in"))
	}
	s.sessDur = s.SessionDuration
	if s.sessDur == 0 {
		s.sessDur = identity.DefaultSessionDuration
	}
	if s.sessDur < identity.MinSessionDuration {
		errs = append(errs, fmt.Errorf("session duration %s is shorter than STS's minimum %s", s.sessDur, identity.MinSessionDuration))
	}
	s.zone = cmpOr(s.AvailabilityZone, s.region+"a")
	s.clusters = map[string]bool{}
	for _, c := range cmpOrSlice(s.Clusters, []string{DefaultCluster}) {
		if !validName(c, 255) {
			errs = append(errs, fmt.Errorf("cluster name %q is not valid", c))
		}
		s.clusters[c] = true
	}
	pool := s.AddressPool
	if !pool.IsValid() {
		pool = netip.MustParsePrefix(DefaultAddressPool)
	}
	p, err := newAddrPool(pool)
	if err != nil {
		errs = append(errs, err)
	}
	s.pool = p
	s.output = s.Output
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.env = make(map[string]string, len(s.Env))
	for k, v := range s.Env {
		if credentialVariable(k) {
			s.log.Warn("credential variable kept out of every task's environment: tasks get their role through the credentials endpoint", logVariable, k)
			continue
		}
		s.env[k] = v
	}
	s.keepDirs = s.KeepDataDirs
	s.retain = s.StoppedRetention
	if s.retain <= 0 {
		s.retain = DefaultStoppedRetention
	}
	if s.LaunchDelay < 0 {
		errs = append(errs, errors.New("launch delay is negative"))
	}
	s.faults.launchDelay = max(s.LaunchDelay, 0)
	s.limits = newLimiter(s.Limits, time.Now())
	if s.defs == nil {
		s.defs = map[string]map[int]*taskDef{}
	}
	s.tasks = map[string]*task{}
	s.creds = map[string]*task{}
	s.tokens = map[string]*tokenEntry{}
	s.hurry = make(chan struct{})
	s.ops = operations()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// startIsolation finds what of the tasks' isolation this process can give, says what
// it cannot, removes what a crashed run left, and closes the task root to listing.
func (s *Server) startIsolation() error {
	if (s.WorkloadUIDVariable == "") != (s.WorkloadGIDVariable == "") {
		return fmt.Errorf("%w: name both workload id variables or neither", ErrInvalidConfig)
	}
	s.uidVar, s.gidVar = s.WorkloadUIDVariable, s.WorkloadGIDVariable
	s.iso = probeIsolation()
	if len(s.iso.missing) > 0 {
		s.log.Warn("tasks are NOT isolated as on Fargate: "+strings.Join(s.iso.missing, "; "), logNotIsolated, s.iso.missing)
	}
	if s.iso.cgroups != nil {
		for _, dir := range s.iso.cgroups.sweep() {
			s.log.Info("removed a crashed run's task cgroup", logPath, dir)
		}
	}
	if s.iso.users {
		// Every task's workload must pass through to its own directory; none may list
		// the others.
		if err := os.Chmod(s.dataRoot, 0o711); err != nil {
			return fmt.Errorf("task root: %w", err)
		}
	}
	return nil
}

func listenLoopback(addr, def string) (net.Listener, error) {
	addr = cmpOr(addr, def)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w", ErrInvalidConfig, addr, err)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%w: listen address %q is not a loopback address", ErrInvalidConfig, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Endpoint returns the ECS API's base URL, for AWS_ENDPOINT_URL_ECS or awsconf.Loopback.
func (s *Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoint()
}

func (s *Server) endpoint() string {
	if s.apiLn == nil {
		return ""
	}
	return "http://" + s.apiLn.Addr().String()
}

// MetadataEndpoint returns the base URL under which each task's metadata is served.
func (s *Server) MetadataEndpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metadataEndpoint()
}

func (s *Server) metadataEndpoint() string {
	if s.metaLn == nil {
		return ""
	}
	return "http://" + s.metaLn.Addr().String()
}

// ClusterARN returns the ARN of the named cluster.
func (s *Server) ClusterARN(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clusterARN(name)
}

func (s *Server) clusterARN(name string) string {
	return fmt.Sprintf("arn:aws:ecs:%s:%s:cluster/%s", s.region, s.account, name)
}

// Close stops every task as StopTask would (SIGTERM, then SIGKILL after the task's stop
// timeout, or at once when ctx ends), then closes both endpoints. When Close returns, every
// task process has exited and been reaped, and each task's process group has been sent
// SIGKILL, so what the tasks started dies too (the kernel delivers that asynchronously).
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	now := time.Now()
	for _, t := range s.tasks {
		s.requestStopLocked(t, now, stopUser, "ecslocal: endpoint shutting down")
	}
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() { s.wg.Wait(); close(drained) }()
	var ctxErr error
	select {
	case <-drained:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		s.hurryOne.Do(func() { close(s.hurry) })
		<-drained
	}

	// Requests in flight get a moment to finish. A connection a client dialled but never
	// used holds Shutdown for seconds; it is cut, which is no error of ours.
	shut, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	errs := []error{ctxErr}
	for _, srv := range []*http.Server{s.apiSrv, s.metaSrv} {
		if err := srv.Shutdown(shut); err != nil {
			errs = append(errs, srv.Close())
		}
	}
	select {
	case err := <-s.serveErr:
		errs = append(errs, err)
	default:
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close ecslocal: %w", err)
	}
	return nil
}

// TaskInfo is what the fault harness and the stack need of one task.
type TaskInfo struct {
	ARN           string
	ID            string
	Cluster       string
	Family        string
	Revision      int
	LastStatus    string
	DesiredStatus string
	// IP is the task's own loopback address (the ENI's privateIPv4Address).
	IP netip.Addr
	// Pid is the process id, also its process group id; 0 before the process starts and
	// after it has exited.
	Pid int
	// DataDir is the process's working directory.
	DataDir string
	// MetadataURI is the task's metadata on the metadata server's loopback listener,
	// where this machine's processes reach it. The task is told this one, or, isolated,
	// the same path at 169.254.170.2 in its own namespace.
	MetadataURI string
	// WorkloadUID and WorkloadGID are the ids the task was given for its workload (0:
	// none, see Server.WorkloadUIDVariable).
	WorkloadUID, WorkloadGID uint32
	// NetNS names the task's own network namespace as /proc/<pid>/ns/net does
	// ("net:[<inode>]"); "" when the task is not isolated or has not started.
	NetNS string
	// Environment is what the container's process was started with (KEY=VALUE, sorted:
	// the definition's, the overrides', the secrets' values and what ECS adds), so a
	// test can tell what a task holds; nil before the process starts.
	Environment []string
}

// TaskAddresses is the prefix task addresses come from: a connection from inside it
// comes from a task (forwarded from its namespace, when isolated).
func (s *Server) TaskAddresses() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool == nil {
		return netip.Prefix{}
	}
	return s.pool.prefix
}

// Tasks returns the tasks that have not stopped yet, oldest first.
func (s *Server) Tasks() []TaskInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []TaskInfo
	for _, t := range s.sortedTasksLocked() {
		if t.lastStatus != statusStopped {
			out = append(out, s.infoLocked(t))
		}
	}
	return out
}

func (s *Server) infoLocked(t *task) TaskInfo {
	return TaskInfo{
		ARN: t.arn, ID: t.id, Cluster: t.cluster, Family: t.def.family, Revision: t.def.revision,
		LastStatus: t.lastStatus, DesiredStatus: t.desiredStatus, IP: t.ip, Pid: t.pid,
		DataDir: t.dataDir, MetadataURI: t.metadataURI,
		WorkloadUID: t.workloadUID, WorkloadGID: t.workloadGID, NetNS: t.netns,
		Environment: slices.Clone(t.environ),
	}
}

func (s *Server) sortedTasksLocked() []*task {
	ts := make([]*task, 0, len(s.tasks))
	for _, t := range s.tasks {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *task) int {
		if c := a.createdAt.Compare(b.createdAt); c != 0 {
			return c
		}
		return compareStrings(a.id, b.id)
	})
	return ts
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func cmpOrSlice(v, def []string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}

// validName reports whether s is 1..n letters, digits, hyphens and underscores: the
// alphabet of cluster names and task definition families.
func validName(s string, n int) bool {
	if len(s) == 0 || len(s) > n {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
