package e2e_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/workload"
)

// The hostile suite: the sandbox's workload is the attacker (testdata/hostile, run as
// SANDBOX_COMMAND), beside another user's sandbox in the same stack. It tries to read a
// secret, signal, trace or starve its agent, reach the stack's data and the other task,
// and the test fails naming every attempt that worked. It runs on the local stack with
// its tasks isolated as Fargate isolates them (ecslocal.Server.Isolate); where the
// machine cannot isolate them, it fails saying why, as the attacks would succeed.

// hostileMemoryMiB is the attacker's task memory, which its memory cgroup enforces.
const hostileMemoryMiB = 512

// hostileAttacks bounds the attack phase: it scans every port of two addresses and
// reads every file it may in the machine's shared directories.
const hostileAttacks = 5 * time.Minute

// result is one of the fixture's result frames.
type result struct {
	Type      string `json:"type"`
	Attack    string `json:"attack"`
	Succeeded bool   `json:"succeeded"`
	Detail    string `json:"detail"`
	Check     string `json:"check"`
	OK        bool   `json:"ok"`
	Phase     string `json:"phase"`
	UID       uint32 `json:"uid"`
	Error     string `json:"error"`
}

func isType(typ string) func(string) bool {
	return func(f string) bool {
		var r result
		return json.Unmarshal([]byte(f), &r) == nil && r.Type == typ
	}
}

func decode(t *testing.T, f string) result {
	t.Helper()
	var r result
	if err := json.Unmarshal([]byte(f), &r); err != nil {
		t.Fatalf("the workload's frame %q: %v", f, err)
	}
	return r
}

// hostileStack starts a stack whose sandboxes run the hostile workload, with its data
// persisted under a root of the test's own (so its files exist to be attacked) and
// aws.env written there as make dev writes it, deployed with a model API whose key
// each agent holds (a Secret of the task definition) and adds to its workload's calls.
// It fails the test unless the stack isolates its tasks.
func hostileStack(t *testing.T) (*testkit.Stack, *testkit.ModelStub) {
	t.Helper()
	fixture := testkit.BuildWorkload(t, "./testdata/hostile")
	model := testkit.StartModelStub(t)
	root, err := os.MkdirTemp("", "sandgate-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) }) // after the stack's close, registered later
	s := testkit.Start(t, func(o *stack.Options) {
		o.Root, o.Persist = root, true
		o.Params = map[string]string{"SandboxCpu": "256", "SandboxMemory": strconv.Itoa(hostileMemoryMiB)}
		o.Overrides["SANDBOX_COMMAND"] = fixture
		o.Overrides["SLEEP_AFTER"] = "10m"
		// The memory hog drives its task's cgroup into reclaim, which stalls the agent
		// beside it too; on a crowded machine a stall of half of Fast's 15 s lease gave
		// the lease up mid-attack and a new sandbox answered instead. The attacks are
		// about containment, not lease timing: give the agent the room production has.
		o.Overrides["LEASE_TTL"] = "60s"
		model.Deploy(o)
	})
	if missing := s.ECS.NotIsolated(); len(missing) > 0 {
		t.Fatalf("the local stack cannot isolate tasks on this machine, so a hostile workload is not contained: %s", strings.Join(missing, "; "))
	}
	if err := s.WriteAWSEnv(filepath.Join(s.Root, stack.AWSEnvFile)); err != nil {
		t.Fatal(err)
	}
	return s, model
}

// hostileSandbox is one user's sandbox running the hostile workload.
type hostileSandbox struct {
	user string
	c    *testkit.Client
	uid  uint32
}

func startHostile(t *testing.T, s *testkit.Stack, user string) *hostileSandbox {
	t.Helper()
	c := s.DialReady(t, user, coldStart)
	hello := decode(t, c.Next(reply, "hello", isType("hello")))
	return &hostileSandbox{user: user, c: c, uid: hello.UID}
}

func (h *hostileSandbox) save(t *testing.T, path, data string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"cmd": "save", "path": path, "data": data})
	h.c.Send(string(b))
	if r := decode(t, h.c.Next(reply, "saved", isType("saved"))); r.Error != "" {
		t.Fatalf("%s: save %s: %s", h.user, path, r.Error)
	}
}

// phase sends cmd and returns the results up to the phase's done frame; when none
// comes, it fails the test naming the attack the report says was running.
func (h *hostileSandbox) phase(t *testing.T, s *testkit.Stack, arn string, cmd map[string]any, within time.Duration) []result {
	t.Helper()
	b, _ := json.Marshal(cmd)
	h.c.Send(string(b))
	var out []result
	for {
		f, err := h.c.Await(within, func(f string) bool { return isType("result")(f) || isType("done")(f) || isType("works")(f) })
		if err != nil {
			t.Fatalf("%s: no more frames from the workload during %q (%v); its report ends with %q", h.user, cmd["cmd"], err, lastReported(s, t, arn))
		}
		r := decode(t, f)
		if r.Type == "done" {
			return out
		}
		out = append(out, r)
	}
}

// lastReported is the last attack the workload's report names.
func lastReported(s *testkit.Stack, t *testing.T, arn string) string {
	ev := report(t, s, arn)
	if len(ev) == 0 {
		return "nothing"
	}
	return ev[len(ev)-1].Attack
}

type evidence struct {
	Attack string            `json:"attack"`
	Items  map[string]string `json:"items"`
}

// report reads the workload's evidence from its workspace, as this machine sees it.
func report(t *testing.T, s *testkit.Stack, arn string) []evidence {
	t.Helper()
	f, err := os.Open(filepath.Join(s.Workspace(t, arn), "hostile-report.jsonl"))
	if err != nil {
		t.Fatalf("the workload's report: %v", err)
	}
	defer f.Close()
	var out []evidence
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	for sc.Scan() {
		var e evidence
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("the workload's report: %v", err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("the workload's report: %v", err)
	}
	return out
}

// failSucceeded fails the test for every attack that succeeded.
func failSucceeded(t *testing.T, who string, results []result) {
	t.Helper()
	for _, r := range results {
		if r.Succeeded {
			t.Errorf("%s: ATTACK SUCCEEDED — %s: %s", who, r.Attack, r.Detail)
		}
	}
}

// accessKey matches any AWS access key id, the stack's sessions' (ASIA…) and users'
// (AKIA…) alike.
var accessKey = regexp.MustCompile(`(AKIA|ASIA)[A-Z0-9]{16}`)

// A workload attacks everything around it, beside another user's sandbox: nothing it
// tries works (each attempt that does is named), nothing it reads holds a secret,
// another task's uid is not its own, its own workspace, port and frames keep working,
// and after a fork bomb and a memory hog its agent still heartbeats, stops cleanly and
// has saved the user's notes.
func TestHostile_Workload_ReachesNothingBeyondItsOwn(t *testing.T) {
	t.Parallel()
	s, model := hostileStack(t)
	victim := startHostile(t, s, "user_victim"+randomHex(4))
	victim.save(t, "notes/secret.txt", "the other user's note")
	attacker := startHostile(t, s, "user_attacker"+randomHex(4))
	attacker.save(t, "notes/before.txt", "saved before the attack")
	s.NotesSynced(t, victim.user, 1, reply)
	s.NotesSynced(t, attacker.user, 1, reply)
	recA, recV := s.Running(t, attacker.user, reply), s.Running(t, victim.user, reply)
	taskA, taskV := s.Task(t, recA.TaskARN), s.Task(t, recV.TaskARN)
	agentPid := s.TaskPid(t, recA.TaskARN)

	// The agent is root with only agent.Capabilities in its bounding set (the task
	// definition drops the rest), PID 1 of a PID namespace of its own.
	st := procStatus(t, agentPid)
	if want := capMask(t, agent.Capabilities); st["CapBnd"] != want || st["CapEff"] != want {
		t.Errorf("the agent's capabilities: bounding %s, effective %s; want %s (%v)", st["CapBnd"], st["CapEff"], want, agent.Capabilities)
	}
	if ns := strings.Fields(st["NSpid"]); len(ns) != 2 || ns[1] != "1" || !strings.HasPrefix(st["Uid"], "0\t") {
		t.Errorf("the agent is uid %q, pids %q: want root, PID 1 of a namespace of its own", st["Uid"], st["NSpid"])
	}

	// Distinct users of the machine, as the stack gave them.
	if attacker.uid != taskA.WorkloadUID || victim.uid != taskV.WorkloadUID || attacker.uid == victim.uid || attacker.uid < 1<<30 {
		t.Fatalf("workload uids: attacker runs as %d (given %d), victim as %d (given %d)", attacker.uid, taskA.WorkloadUID, victim.uid, taskV.WorkloadUID)
	}

	victimWS := s.Workspace(t, recV.TaskARN)
	var stackFiles []string
	_ = filepath.WalkDir(s.Root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p == filepath.Join(s.Root, "tasks") {
			return filepath.SkipDir
		}
		if err == nil && p != s.Root {
			stackFiles = append(stackFiles, p)
		}
		return nil
	})
	if !slices.Contains(stackFiles, filepath.Join(s.Root, stack.AWSEnvFile)) || len(stackFiles) < 4 {
		t.Fatalf("the stack's files to attack: %q", stackFiles)
	}
	agentPort := strconv.Itoa(agent.DefaultPort)
	targets := map[string]any{
		"expectedEnv": append(append(slices.Clone(workload.Own), workload.PassThrough...),
			agent.EnvWorkloadActivityURL, agent.EnvWorkloadSleepAfter, apiproxy.WorkloadVar("model")),
		"ownTaskIP":      taskA.IP.String(),
		"agentPort":      agent.DefaultPort,
		"victimEndpoint": recV.Endpoint,
		"victimTaskIP":   taskV.IP.String(),
		"victimPaths": []string{taskV.DataDir, filepath.Join(taskV.DataDir, "mnt"), filepath.Dir(victimWS), victimWS,
			filepath.Join(victimWS, "notes"), filepath.Join(victimWS, "notes", "secret.txt"), filepath.Join(filepath.Dir(victimWS), ".sandgate")},
		"stackRoot":     s.Root,
		"stackFiles":    stackFiles,
		"dynamoDBLocal": strings.TrimPrefix(s.DynamoDB.EmulatorEndpoint(), "http://"),
		"dynamoDBFront": s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"],
		"s3":            s.Endpoints["AWS_ENDPOINT_URL_S3"],
		"hostMetadata":  s.ECS.MetadataEndpoint(),
		"table":         s.Table,
		"bucket":        s.Bucket,
		"victimUser":    victim.user,
	}
	if recV.Endpoint != "http://"+net.JoinHostPort(taskV.IP.String(), agentPort) {
		t.Fatalf("the victim's endpoint %s is not its task's address", recV.Endpoint)
	}

	results := attacker.phase(t, s, recA.TaskARN, map[string]any{"cmd": "attack", "targets": targets}, hostileAttacks)
	if len(results) < 20 {
		t.Errorf("only %d attacks reported: %+v", len(results), results)
	}
	for _, r := range results {
		t.Logf("%s: %s", r.Attack, r.Detail)
	}
	failSucceeded(t, attacker.user, results)

	// Nothing the workload read holds a secret: the leases and gateway tokens of both
	// sandboxes, the operator's key, any access key the stack issued (the tasks' and
	// functions' sessions). (The local signing secret is not one: it is in the source,
	// which the machine's other checkouts leave readable.)
	op := s.Operator()
	secrets := map[string]string{
		"the attacker's lease token": recA.LeaseToken, "the attacker's gateway token": recA.GatewayToken,
		"the victim's lease token": recV.LeaseToken, "the victim's gateway token": recV.GatewayToken,
		"the operator's key id": op.AccessKeyID, "the operator's secret key": op.SecretAccessKey,
		"the team's model key": model.Key,
	}
	scrubbed := false
	for _, ev := range report(t, s, recA.TaskARN) {
		if strings.HasPrefix(ev.Attack, "the model key") && strings.Contains(ev.Items["echo"], apiproxy.Redacted) {
			scrubbed = true
		}
		for item, text := range ev.Items {
			for name, secret := range secrets {
				if secret != "" && strings.Contains(text, secret) {
					t.Errorf("%s: SECRET READ — %s by %q (%s)", attacker.user, name, ev.Attack, item)
				}
			}
			for _, k := range accessKey.FindAllString(text, -1) {
				if _, _, err := s.Authority().Resolve(k, ""); !errors.Is(err, identity.ErrUnknownKey) {
					t.Errorf("%s: SECRET READ — the stack's access key %s by %q (%s)", attacker.user, k, ev.Attack, item)
				}
			}
		}
	}
	// Not vacuous: the model API was asked with the key, and echoed it, scrubbed.
	if answered, _ := model.Calls(); answered < 2 || !scrubbed {
		t.Errorf("the model API answered %d calls with the key, and the echo was scrubbed: %v; the key attack proved nothing", answered, scrubbed)
	}
	attacker.stillServes(t, s, "after the attacks")

	// Exhaustion: a fork bomb, then a memory hog; the agent is the same process, still
	// heartbeats, and the sandbox is the same one.
	for _, cmd := range []map[string]any{{"cmd": "forkbomb"}, {"cmd": "memory", "maxMiB": 2 * hostileMemoryMiB}} {
		before := time.Now()
		res := attacker.phase(t, s, recA.TaskARN, cmd, hostileAttacks)
		if len(res) != 1 {
			t.Fatalf("%s: %d results", cmd["cmd"], len(res))
		}
		t.Logf("%s: %s", res[0].Attack, res[0].Detail)
		failSucceeded(t, attacker.user, res)
		if res[0].Attack == "fork bomb" && !strings.Contains(res[0].Detail, "refused after") {
			t.Errorf("the fork bomb was not refused by the kernel: %s", res[0].Detail)
		}
		attacker.stillServes(t, s, "after the "+res[0].Attack)
		rec := s.WaitState(t, attacker.user, reply, "heartbeating after the "+res[0].Attack, func(sb *state.Sandbox) bool {
			return sb.HeartbeatAt.After(before)
		})
		if rec.State != state.Running || rec.TaskARN != recA.TaskARN || rec.Generation != recA.Generation {
			t.Fatalf("after the %s the sandbox is %s %s generation %d, want the same running one", res[0].Attack, rec.State, rec.TaskARN, rec.Generation)
		}
		if pid := s.TaskPid(t, recA.TaskARN); pid != agentPid {
			t.Fatalf("after the %s the agent is pid %d, was %d", res[0].Attack, pid, agentPid)
		}
	}

	// The other sandbox is untouched and still serves.
	victim.stillServes(t, s, "after the attacker's attacks")
	if rec := s.Running(t, victim.user, reply); rec.TaskARN != recV.TaskARN {
		t.Fatalf("the victim's sandbox changed: %s", rec.TaskARN)
	}

	// A clean stop: the final sync keeps what the user saved before the attack.
	s.StopTask(t, recA.TaskARN)
	if code := s.ExitCode(t, recA.TaskARN, coldStart); code != 0 {
		t.Fatalf("the attacked agent exited %d", code)
	}
	s.Stopped(t, attacker.user, reply)
	if got := string(s.Object(t, attacker.user, "notes/before.txt")); got != "saved before the attack" {
		t.Fatalf("the note saved before the attack is %q in the bucket", got)
	}
	if got := string(s.Object(t, victim.user, "notes/secret.txt")); got != "the other user's note" {
		t.Fatalf("the victim's note is %q in the bucket", got)
	}
}

// stillServes checks that the workload's frames, workspace and port work.
func (h *hostileSandbox) stillServes(t *testing.T, s *testkit.Stack, when string) {
	t.Helper()
	echo := "echo " + when
	h.c.Send(echo)
	h.c.Next(reply, "the echo "+when, testkit.Is(echo))
	h.c.Send(`{"cmd":"selfcheck"}`)
	for {
		f := h.c.Next(reply, "selfcheck "+when, func(f string) bool { return isType("works")(f) || isType("done")(f) })
		r := decode(t, f)
		if r.Type == "done" {
			return
		}
		if !r.OK {
			t.Errorf("%s: its own %s does not work %s: %s", h.user, r.Check, when, r.Error)
		}
	}
}

// procStatus reads /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// capMask is the /proc status mask of the named capabilities.
func capMask(t *testing.T, names []string) string {
	t.Helper()
	numbers := map[string]int{"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "FOWNER": unix.CAP_FOWNER,
		"KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID, "SETUID": unix.CAP_SETUID}
	var m uint64
	for _, n := range names {
		c, ok := numbers[n]
		if !ok {
			t.Fatalf("capability %s unknown to the test", n)
		}
		m |= 1 << c
	}
	return fmt.Sprintf("%016x", m)
}
