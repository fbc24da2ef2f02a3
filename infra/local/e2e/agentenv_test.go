package e2e_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/state"
)

// agentEnv is one test's view of the agent run as a task on the shared stack and
// driven as the functions drive it: the test takes the lease and launches the task as
// Connect does, and delivers frames to the agent as Message does, to choose their
// order. Its clients connect through a gateway of its own whose $connect and
// $disconnect record the connections; its task definition is the template's with the
// test's timings; its tasks reach DynamoDB and S3 through proxies that record every
// request and can cut the network.
type agentEnv struct {
	t        *testing.T
	s        *testkit.Stack
	gw       *testkit.Gateway
	conns    *testkit.Connections
	launcher *launcher.Launcher
	api      agentapi.Client
	s3, ddb  *testkit.Proxy
}

// timings are the variables a test sets in its task definition; "" removes one.
type timings map[string]string

// defaults keep the lease's deadline out of reach of any stall a loaded machine may
// have (an agent gives its lease up after failing to renew for half of LEASE_TTL); a
// test that needs a lease to run out sets its own.
var defaults = timings{
	"SLEEP_AFTER": "60s", "MAX_LIFETIME": "10m", "SYNC_INTERVAL": "1s", "LEASE_TTL": "60s",
	"STOP_TIMEOUT": "15s", "WORKLOAD_GRACE": "2s", "MESSAGE_RATE_LIMIT": "1000", "LOG_LEVEL": "DEBUG",
}

// leaseTTL is LEASE_TTL for tests that wait for a lease to run out: long enough that
// no stall before the test's own fault makes the agent give it up.
const leaseTTL = 15 * time.Second

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9]+`)

// newAgentEnv registers the test's task definition on the shared stack.
func newAgentEnv(t *testing.T, over timings) *agentEnv {
	t.Helper()
	s := apps.Get(t)
	e := &agentEnv{t: t, s: s, conns: testkit.NewConnections(s.Store)}
	e.gw = testkit.StartGateway(t, quietLog(), e.conns.Routes(), e.conns.Funcs(),
		func(g *apigw.Server) { g.SequentialDispatch = true })
	e.s3 = testkit.NewProxy(t, s.Endpoints["AWS_ENDPOINT_URL_S3"])
	e.ddb = testkit.NewProxy(t, s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"])

	// The template's container environment, the data volume mapped into the task's
	// directory as the stack maps it, the proxies, and the test's timings.
	td := s.Template.TaskDefinitions["SandboxTaskDefinition"]
	c := td.Containers[0]
	vars := maps.Clone(c.Environment)
	vars["DATA_DIR"] = "mnt/data"
	vars["AWS_ENDPOINT_URL_S3"] = e.s3.URL
	vars["AWS_ENDPOINT_URL_DYNAMODB"] = e.ddb.URL
	// The agent's replies reach the test's gateway through a relay of the test's own
	// (the stack's relay function posts to the stack's gateway); its credentials come
	// from the stack's vendor, as in AWS.
	vars[agent.EnvRelayURL] = s.StartRelay(t, e.gw.Server.ManagementEndpoint(), quietLog())
	maps.Copy(vars, defaults)
	for k, v := range over {
		if v == "" {
			delete(vars, k)
		} else {
			vars[k] = v
		}
	}
	family := "sandbox-" + strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	family = family[:min(len(family), 200)]
	if _, err := s.ECS.RegisterTaskDefinition(ecslocal.TaskDefinition{
		Family: family, ContainerName: c.Name, Command: []string{testkit.Binaries(t).Agent()},
		Environment: vars, Port: c.Ports[0], StopTimeout: 30 * time.Second,
		// The template's roles: the agent has its task role's rights and no other.
		TaskRole: td.TaskRole, ExecutionRole: td.ExecutionRole,
	}); err != nil {
		t.Fatal(err)
	}
	e.launcher = launcher.New(s.ECSClient(), launcher.Config{
		Cluster: s.Cluster, TaskDefinition: family, Container: c.Name,
		Subnets: []string{"subnet-0local"}, Table: s.Table, Bucket: s.Bucket,
		ManagementEndpoint: e.gw.Server.ManagementEndpoint(),
	}, quietLog())
	return e
}

// user returns a user id unique to this test and run.
func (e *agentEnv) user(name string) string { return "user_" + name + randomHex(4) }

// conn is one of the user's clients and its connection's id.
type conn struct {
	*testkit.Client
	id string
}

// connect opens a client for user and returns once its connection is recorded.
func (e *agentEnv) connect(user string) conn {
	e.t.Helper()
	c, id := e.conns.Dial(e.t, e.gw, user)
	return conn{Client: c, id: id}
}

// ready connects a client for user, starts the user's sandbox and waits until the
// client hears it is ready.
func (e *agentEnv) ready(user string) (*sandbox, conn) {
	e.t.Helper()
	c := e.connect(user)
	sb := e.start(user)
	c.Status(frames.Ready, coldStart)
	return sb, c
}

// sandbox is one launched task.
type sandbox struct {
	e     *agentEnv
	user  string
	lease state.Lease
	arn   string
}

// start takes the user's lease and launches the agent, as Connect does.
func (e *agentEnv) start(user string) *sandbox {
	e.t.Helper()
	l, err := e.s.Store.Acquire(context.Background(), user)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.launch(user, l)
}

// launch launches the agent for a lease the test holds.
func (e *agentEnv) launch(user string, l state.Lease) *sandbox {
	e.t.Helper()
	ctx := context.Background()
	arn, err := e.launcher.Launch(ctx, launcher.Spec{UserID: user, LeaseToken: l.Token, Generation: l.Generation})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.s.Store.SetTask(ctx, l, arn); err != nil {
		e.t.Fatal(err)
	}
	return e.task(user, l, arn)
}

// task follows a launched task: its lines are logged if the test fails, and it is
// stopped when the test ends.
func (e *agentEnv) task(user string, l state.Lease, arn string) *sandbox {
	sb := &sandbox{e: e, user: user, lease: l, arn: arn}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			for _, l := range e.s.Output.Lines(func(l testkit.Line) bool { return l.Task(arn) }) {
				e.t.Logf("task %s: %v", arn, l.Fields)
			}
		}
		_ = e.launcher.Stop(context.Background(), arn, "test over")
	})
	return sb
}

// info returns the live task, or a zero TaskInfo once it has stopped.
func (sb *sandbox) info() ecslocal.TaskInfo {
	for _, ti := range sb.e.s.ECS.Tasks() {
		if ti.ARN == sb.arn {
			return ti
		}
	}
	return ecslocal.TaskInfo{}
}

// waitState waits until the user's record is in st and returns it.
func (sb *sandbox) waitState(st state.State) *state.Sandbox {
	sb.e.t.Helper()
	return sb.e.s.WaitState(sb.e.t, sb.user, coldStart, string(st), func(r *state.Sandbox) bool { return r.State == st })
}

// target is how the functions reach the running agent.
func (sb *sandbox) target() agentapi.Target {
	rec := sb.waitState(state.Running)
	return agentapi.Target{Endpoint: rec.Endpoint, Token: rec.GatewayToken, UserID: sb.user}
}

// exitCode waits for the task to stop and returns its container's exit code.
func (sb *sandbox) exitCode() int {
	sb.e.t.Helper()
	return sb.e.s.ExitCode(sb.e.t, sb.arn, coldStart)
}

// stop asks ECS to stop the task: SIGTERM, as a deploy or StopTask does.
func (sb *sandbox) stop() {
	sb.e.t.Helper()
	if err := sb.e.launcher.Stop(context.Background(), sb.arn, "test"); err != nil {
		sb.e.t.Fatal(err)
	}
}

// signal sends sig to the agent process itself.
func (sb *sandbox) signal(sig syscall.Signal) {
	sb.e.t.Helper()
	if err := syscall.Kill(sb.e.s.TaskPid(sb.e.t, sb.arn), sig); err != nil {
		sb.e.t.Fatal(err)
	}
}

// workspace is the task's user directory, as the workload sees it.
func (sb *sandbox) workspace() string {
	sb.e.t.Helper()
	return sb.e.s.Workspace(sb.e.t, sb.arn)
}

// write puts a file into the task's workspace, as the workload would.
func (sb *sandbox) write(rel string, data []byte) {
	sb.e.t.Helper()
	writeFile(sb.e.t, sb.workspace(), rel, data)
}

// deliver sends one frame for the client's connection as the Message function does.
func (sb *sandbox) deliver(c conn, frame string) {
	sb.e.t.Helper()
	if err := sb.e.api.Deliver(context.Background(), sb.target(), c.id, []byte(frame)); err != nil {
		sb.e.t.Fatalf("deliver %q: %v", frame, err)
	}
}

// leaseLost returns the time the agent of the task logged giving its lease up: its
// error line whose error is agent.ErrLeaseLost. ok is false when it logged none.
func (sb *sandbox) leaseLost() (at time.Time, ok bool) {
	lines := sb.e.s.Output.Lines(func(l testkit.Line) bool { return l.Task(sb.arn) && isLeaseLost(l) })
	if len(lines) == 0 {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, lines[0].Str(testkit.KeyTime))
	return at, err == nil
}

// isLeaseLost matches an agent's line saying it gave its lease up.
func isLeaseLost(l testkit.Line) bool {
	return l.Str(testkit.KeyLevel) == "ERROR" && strings.HasPrefix(l.Str(testkit.KeyError), agent.ErrLeaseLost.Error()+":")
}

// workloadPids returns the processes whose working directory is the workspace.
func workloadPids(workspace string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == workspace {
			pids = append(pids, pid)
		}
	}
	return pids
}
