package ecslocal_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

// Tests of each isolation mechanism Server.Isolate gives a task. They fail, never
// skip, where the machine cannot isolate (not root, no namespaces, no cgroup v1): what
// is missing is then the failure.

const (
	uidVar = "WORKLOAD_UID"
	gidVar = "WORKLOAD_GID"
)

func isolated(s *ecslocal.Server) {
	s.Isolate = true
	s.WorkloadUIDVariable, s.WorkloadGIDVariable = uidVar, gidVar
}

// requireIsolation fails the test unless the server isolates tasks wholly.
func requireIsolation(t *testing.T, s *ecslocal.Server) {
	t.Helper()
	if missing := s.NotIsolated(); len(missing) > 0 {
		t.Fatalf("tasks are not isolated here, so isolation cannot be tested: %s", strings.Join(missing, "; "))
	}
}

// isoTask is one running task of an isolated server, reached through its port mapping.
type isoTask struct {
	arn, ip string
	info    ecslocal.TaskInfo
}

func (e *env) startIsolated(t *testing.T, token string) isoTask {
	t.Helper()
	arn := aws.ToString(e.run(t, runInput(token)).TaskArn)
	task := e.waitStatus(t, arn, "RUNNING")
	it := isoTask{arn: arn, ip: privateIP(task)}
	e.whoami(t, it.ip) // answers once it serves
	for _, info := range e.srv.Tasks() {
		if info.ARN == arn {
			it.info = info
		}
	}
	if it.info.Pid == 0 {
		t.Fatalf("task %s has no process", arn)
	}
	return it
}

// inside asks the task to GET url, or to dial addr, from inside its namespace.
func (e *env) fetchInside(t *testing.T, it isoTask, url string) (status int, body, fail string) {
	t.Helper()
	code, b := e.get(t, it.ip, "/fetch?url="+url)
	var out struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
		Error  string `json:"error"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil {
		t.Fatalf("fetch %s inside %s: %d %s", url, it.ip, code, b)
	}
	return out.Status, out.Body, out.Error
}

func (e *env) dialInside(t *testing.T, it isoTask, addr string) (connected bool, fail string) {
	t.Helper()
	code, b := e.get(t, it.ip, "/dial?addr="+addr)
	var out struct {
		Connected bool   `json:"connected"`
		Error     string `json:"error"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil {
		t.Fatalf("dial %s inside %s: %d %s", addr, it.ip, code, b)
	}
	return out.Connected, out.Error
}

// ownNetns names the network namespace of this process's threads. (/proc/self names its
// main thread's, which may be one ecslocal left in a task's namespace for good: Go
// never ends the main thread.)
func ownNetns(t *testing.T) string {
	t.Helper()
	ch := make(chan string)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		id, _ := os.Readlink("/proc/thread-self/ns/net")
		ch <- id
	}()
	return <-ch
}

// nsOf names the network or PID namespace of pid.
func nsOf(t *testing.T, pid any, kind string) string {
	t.Helper()
	id, err := os.Readlink(fmt.Sprintf("/proc/%v/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// holders lists the processes and this process's descriptors that hold namespace id.
func holders(id string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if l, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "net")); err == nil && l == id {
			out = append(out, "process "+p.Name())
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && l == id {
			out = append(out, "descriptor "+fd.Name())
		}
	}
	return out
}

// Each task runs in a network and a PID namespace of its own (PID 1 there), which
// nothing holds once the task has stopped; its port mapping is reached at its address
// from this machine, as the functions reach an agent.
func TestIsolate_TaskNamespaces_CreatedAndRemoved(t *testing.T) {
	t.Parallel()
	e := start(t, isolated)
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port)})
	requireIsolation(t, e.srv)
	a, b := e.startIsolated(t, "ns-a"), e.startIsolated(t, "ns-b")

	ours := ownNetns(t)
	for _, it := range []isoTask{a, b} {
		if it.info.NetNS == "" || it.info.NetNS == ours {
			t.Fatalf("task %s's network namespace is %q, this process's %q", it.arn, it.info.NetNS, ours)
		}
		if got := nsOf(t, it.info.Pid, "net"); got != it.info.NetNS {
			t.Errorf("task process %d is in %s, the task's namespace is %s", it.info.Pid, got, it.info.NetNS)
		}
		if nsOf(t, it.info.Pid, "pid") == nsOf(t, "self", "pid") {
			t.Errorf("task process %d shares this process's PID namespace", it.info.Pid)
		}
		if w := e.whoami(t, it.ip); w.Pid != 1 {
			t.Errorf("the task's process is pid %d in its namespace, want 1", w.Pid)
		}
	}
	if a.info.NetNS == b.info.NetNS {
		t.Fatalf("two tasks share the network namespace %s", a.info.NetNS)
	}

	e.stop(t, a.arn)
	if h := holders(a.info.NetNS); len(h) > 0 {
		t.Errorf("the stopped task's network namespace is still held by %v", h)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(a.ip, e.port), time.Second); err == nil {
		c.Close()
		t.Errorf("the stopped task's port is still forwarded")
	}
	if len(holders(b.info.NetNS)) == 0 {
		t.Errorf("the running task's namespace is held by nothing")
	}
}

// stop stops the task and waits until ECS has released what it held.
func (e *env) stop(t *testing.T, arn string) {
	t.Helper()
	if _, err := e.ecs.StopTask(t.Context(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, arn, "STOPPED")
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// From inside a task: the loopback endpoints its environment names answer (seen as
// coming from the task's address); another task's address, a port of this machine its
// environment does not name and the metadata server's own listener do not.
func TestIsolate_Network_OnlyWhatTheEnvironmentNames(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		from []string
	)
	named := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		from = append(from, r.RemoteAddr)
		mu.Unlock()
		_, _ = w.Write([]byte("named endpoint"))
	}))
	t.Cleanup(named.Close)
	unnamed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("unnamed")) }))
	t.Cleanup(unnamed.Close)

	e := start(t, isolated, func(s *ecslocal.Server) { s.Env["NAMED_ENDPOINT"] = named.URL + "/api" })
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port)})
	requireIsolation(t, e.srv)
	a, b := e.startIsolated(t, "net-a"), e.startIsolated(t, "net-b")

	if status, body, fail := e.fetchInside(t, a, named.URL+"/api"); status != http.StatusOK || body != "named endpoint" {
		t.Fatalf("the endpoint the environment names, from inside: %d %q %s", status, body, fail)
	}
	mu.Lock()
	if len(from) != 1 || !strings.HasPrefix(from[0], a.ip+":") {
		t.Errorf("the named endpoint saw the task's request come from %v, want the task's address %s", from, a.ip)
	}
	mu.Unlock()
	for what, addr := range map[string]string{
		"another task's port":          net.JoinHostPort(b.ip, e.port),
		"a port the environment omits": strings.TrimPrefix(unnamed.URL, "http://"),
		"the metadata server's own":    strings.TrimPrefix(e.srv.MetadataEndpoint(), "http://"),
		"the ECS API":                  strings.TrimPrefix(e.srv.Endpoint(), "http://"),
	} {
		if ok, _ := e.dialInside(t, a, addr); ok {
			t.Errorf("from inside a task, %s (%s) is reachable", what, addr)
		}
	}
	// Its own port at its own address answers inside (the process listens there).
	if ok, fail := e.dialInside(t, a, net.JoinHostPort(a.ip, e.port)); !ok {
		t.Errorf("the task cannot reach its own port: %s", fail)
	}
}

// Each task's metadata at 169.254.170.2 inside its namespace is its own: another
// task's path is unknown there.
func TestIsolate_Metadata_InsideTheNamespaceForTheTaskOnly(t *testing.T) {
	t.Parallel()
	e := start(t, isolated)
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port)})
	requireIsolation(t, e.srv)
	a, b := e.startIsolated(t, "meta-a"), e.startIsolated(t, "meta-b")
	code, uri := e.get(t, a.ip, "/env?name=ECS_CONTAINER_METADATA_URI_V4")
	inside := "http://" + ecslocal.MetadataAddress.Addr().String() + "/v4/"
	if code != http.StatusOK || !strings.HasPrefix(string(uri), inside+taskID(a.arn)+"-") {
		t.Fatalf("the task's ECS_CONTAINER_METADATA_URI_V4 is %d %q, want %s<its docker id>", code, uri, inside)
	}
	if status, _, fail := e.fetchInside(t, a, string(uri)); status != http.StatusOK {
		t.Fatalf("its own metadata inside: %d %s", status, fail)
	}
	bPath := b.info.MetadataURI[strings.Index(b.info.MetadataURI, "/v4/"):]
	if status, body, _ := e.fetchInside(t, a, "http://"+ecslocal.MetadataAddress.Addr().String()+bPath); status != http.StatusNotFound {
		t.Errorf("another task's metadata inside a task: %d %s", status, body)
	}
	// This machine's processes still read every task's metadata on the loopback listener.
	var c metaContainer
	if code := getMeta(t, b.info.MetadataURI, &c); code != http.StatusOK || c.Networks[0].IPv4Addresses[0] != b.ip {
		t.Errorf("the task's metadata on this machine: %d %+v", code, c)
	}
}

// The task role's credentials: the task is told AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
// and its SDK gets them at 169.254.170.2 inside its namespace; the same id is unknown to
// the metadata server's loopback listener, and to another task's namespace.
func TestIsolate_Credentials_RelativeURIAnswersOnlyInsideTheNamespace(t *testing.T) {
	t.Parallel()
	w := startWorld(t, 0, isolated)
	requireIsolation(t, w.srv)
	port := mustAtoi(t, w.port)
	w.registerWorker(t, ecslocal.TaskDefinition{TaskRole: roleARN("sandbox-task"), ExecutionRole: roleARN("sandbox-exec"), Port: port})
	var tasks []isoTask
	for _, token := range []string{"cred-a", "cred-b"} {
		arn := aws.ToString(w.run(t, workerInput(token)).TaskArn)
		tasks = append(tasks, isoTask{arn: arn, ip: privateIP(w.waitStatus(t, arn, "RUNNING"))})
	}
	a, b := tasks[0], tasks[1]

	id := w.taskSTS(t, a.ip)
	if want := "arn:aws:sts::" + account + ":assumed-role/sandbox-task/" + taskID(a.arn); id.Arn != want || id.Source != "CredentialsEndpointProvider" {
		t.Fatalf("inside, the task's SDK is %s (from %s), want %s from the credentials endpoint", id.Arn, id.Source, want)
	}
	code, rel := w.get(t, a.ip, "/env?name=AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
	if code != http.StatusOK || !strings.HasPrefix(string(rel), ecslocal.CredentialsPathPrefix) {
		t.Fatalf("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: %d %q", code, rel)
	}
	if code, _ := w.get(t, a.ip, "/env?name=AWS_CONTAINER_CREDENTIALS_FULL_URI"); code != http.StatusNotFound {
		t.Errorf("an isolated task is also told a full URI")
	}
	status, body, _ := w.fetchInside(t, a, "http://"+ecslocal.MetadataAddress.Addr().String()+string(rel))
	if status != http.StatusOK || !strings.Contains(body, id.AccessKeyID) {
		t.Fatalf("the relative URI inside the task: %d %s", status, body)
	}
	if code, body := fetch(t, w.srv.MetadataEndpoint()+string(rel)); code != http.StatusBadRequest || strings.Contains(string(body), "AccessKeyId") {
		t.Errorf("the task's credentials id on this machine's metadata listener: %d %s", code, body)
	}
	if status, body, _ := w.fetchInside(t, b, "http://"+ecslocal.MetadataAddress.Addr().String()+string(rel)); status != http.StatusBadRequest || strings.Contains(body, "AccessKeyId") {
		t.Errorf("the task's credentials id inside another task: %d %s", status, body)
	}
}

// Each task's workload ids are its own, told in the variables the server names, far from
// any user of the machine; the task's directory is root's and that group's only, under a
// root nobody may list.
func TestIsolate_WorkloadIDs_DistinctPerTask(t *testing.T) {
	t.Parallel()
	e := start(t, isolated, func(s *ecslocal.Server) {})
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port),
		Environment: map[string]string{"PORT": e.port, uidVar: "10001", gidVar: "10001"}})
	requireIsolation(t, e.srv)
	seen := map[uint32]string{}
	for _, token := range []string{"ids-a", "ids-b", "ids-c"} {
		it := e.startIsolated(t, token)
		for name, want := range map[string]uint32{uidVar: it.info.WorkloadUID, gidVar: it.info.WorkloadGID} {
			if code, v := e.get(t, it.ip, "/env?name="+name); code != http.StatusOK || string(v) != strconv.FormatUint(uint64(want), 10) {
				t.Errorf("%s: the task's %s is %d %q, want %d", it.arn, name, code, v, want)
			}
		}
		if it.info.WorkloadUID < 1<<30 || it.info.WorkloadGID != it.info.WorkloadUID {
			t.Errorf("%s: workload ids %d:%d", it.arn, it.info.WorkloadUID, it.info.WorkloadGID)
		}
		if other, dup := seen[it.info.WorkloadUID]; dup {
			t.Fatalf("tasks %s and %s were given the same workload uid %d", other, it.arn, it.info.WorkloadUID)
		}
		seen[it.info.WorkloadUID] = it.arn
		fi, err := os.Stat(it.info.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o710 || st.Uid != 0 || st.Gid != it.info.WorkloadGID {
			t.Errorf("task directory %s: %v %d:%d, want 0710 root:%d", it.info.DataDir, fi.Mode().Perm(), st.Uid, st.Gid, it.info.WorkloadGID)
		}
		if root, err := os.Stat(filepath.Dir(it.info.DataDir)); err != nil || root.Mode().Perm() != 0o711 {
			t.Errorf("task root: %v %v, want 0711", root.Mode().Perm(), err)
		}
	}
}

// The task's process starts with its definition's bounding set (Docker's defaults less
// what it drops, plus what it adds) and runs as its definition's user.
func TestIsolate_Capabilities_TheDefinitionsBoundingSet(t *testing.T) {
	t.Parallel()
	e := start(t, isolated)
	drop := []string{"AUDIT_WRITE", "FOWNER", "FSETID", "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETPCAP", "SYS_CHROOT"}
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port),
		User: "0", DropCapabilities: drop, AddCapabilities: []string{"SYS_PTRACE"}})
	requireIsolation(t, e.srv)
	it := e.startIsolated(t, "caps")
	status := e.status(t, it)
	want := capMask(t, "CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID", "SYS_PTRACE")
	for _, field := range []string{"CapBnd", "CapEff", "CapPrm"} {
		if got := status[field]; got != want {
			t.Errorf("%s %s, want %s", field, got, want)
		}
	}
	if status["Uid"] != "0\t0\t0\t0" {
		t.Errorf("Uid %q, want root", status["Uid"])
	}

	// Another user, as the definition says.
	e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port), User: "4242:4343"})
	other := e.startIsolated(t, "user")
	if s := e.status(t, other); s["Uid"] != "4242\t4242\t4242\t4242" || s["Gid"] != "4343\t4343\t4343\t4343" || s["CapEff"] != "0000000000000000" {
		t.Errorf("User 4242:4343: Uid %q, Gid %q, CapEff %q", s["Uid"], s["Gid"], s["CapEff"])
	}
}

// status reads the task process's /proc/self/status.
func (e *env) status(t *testing.T, it isoTask) map[string]string {
	t.Helper()
	code, b := e.get(t, it.ip, "/status")
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, b)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func capMask(t *testing.T, names ...string) string {
	t.Helper()
	var m uint64
	for _, n := range names {
		c, ok := capNumbers[n]
		if !ok {
			t.Fatalf("unknown capability %s", n)
		}
		m |= 1 << c
	}
	return fmt.Sprintf("%016x", m)
}

var capNumbers = map[string]int{"CHOWN": 0, "DAC_OVERRIDE": 1, "KILL": 5, "SETGID": 6, "SETUID": 7, "SYS_PTRACE": 19}

// Each task has memory and pids cgroups of its own, limited to its memory, which are
// removed with it; a cgroup a crashed run left behind (its process is gone) is removed
// at the next Start, one of a live process is not.
func TestIsolate_Cgroups_PerTaskAndSwept(t *testing.T) {
	t.Parallel()
	e := start(t, isolated)
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port), Memory: 768})
	requireIsolation(t, e.srv)
	it := e.startIsolated(t, "cg")
	dirs := taskCgroups(t, it.info.Pid)
	for _, c := range []string{"memory", "pids"} {
		if !strings.Contains(filepath.Base(dirs[c]), it.info.ID) {
			t.Fatalf("the task's %s cgroup is %q, not one of its own", c, dirs[c])
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dirs["memory"], "memory.limit_in_bytes")); strings.TrimSpace(string(b)) != strconv.Itoa(768<<20) {
		t.Errorf("memory limit %q, want the task's 768 MiB", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dirs["pids"], "pids.max")); strings.TrimSpace(string(b)) != strconv.Itoa(ecslocal.DefaultTaskPids) {
		t.Errorf("pids.max %q", b)
	}
	e.stop(t, it.arn)
	for c, dir := range dirs {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("the stopped task's %s cgroup %s is still there", c, dir)
		}
	}

	// Leftovers: one of a process that is gone, one of this (live) process.
	parent := filepath.Dir(dirs["memory"])
	gone := exitedPid(t)
	crashed := filepath.Join(parent, fmt.Sprintf("sandgate-%d-crashedtask", gone))
	live := filepath.Join(parent, fmt.Sprintf("sandgate-%d-livetask", os.Getppid()))
	for _, d := range []string{crashed, live} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Remove(crashed); os.Remove(live) })
	start(t, isolated)
	if _, err := os.Stat(crashed); err == nil {
		t.Errorf("a crashed run's cgroup %s was not removed", crashed)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live process's cgroup %s was removed", live)
	}
}

// taskCgroups maps each controller to pid's cgroup directory in it.
func taskCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains([]string{"memory", "pids"}, parts[1]) {
			out[parts[1]] = filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
		}
	}
	return out
}

// exitedPid returns the pid of a process that has exited and been reaped.
func exitedPid(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess(fixture, []string{fixture, "-mode", "exit"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return p.Pid
}

// envHelperFixture, set, makes this test binary a helper that a test runs as another
// user (the fixture's path is its value).
const envHelperFixture = "ECSLOCAL_TEST_HELPER_FIXTURE"

// Where this process is not root, Start says in one warning what is not isolated and
// why, NotIsolated names it, and tasks run as before with this process's own ids as
// their workload's (with which the agent runs its workload as itself, not refusing).
func TestIsolate_NotRoot_SaysSoAndFallsBack(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ecslocal-not-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(self)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	exe := filepath.Join(dir, "ecslocal.test")
	if err == nil {
		err = os.WriteFile(exe, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	cmd := exec.Command(exe, "-test.run=^TestIsolate_NotRootHelper$", "-test.v", "-test.count=1")
	cmd.Env = []string{envHelperFixture + "=" + fixture, "HOME=/", "PATH=" + os.Getenv("PATH")}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
	}
	_, result, ok := strings.Cut(string(out), "RESULT ")
	var r notRootResult
	if !ok || json.Unmarshal([]byte(strings.SplitN(result, "\n", 2)[0]), &r) != nil {
		t.Fatalf("helper said no result:\n%s", out)
	}
	if len(r.NotIsolated) == 0 || !strings.Contains(r.NotIsolated[0], "not root") || !strings.Contains(r.NotIsolated[0], "shared loopback") {
		t.Errorf("NotIsolated as uid %d: %q", nobody, r.NotIsolated)
	}
	if strings.Count(string(out), "tasks are NOT isolated as on Fargate") != 1 {
		t.Errorf("want exactly one warning at start:\n%s", out)
	}
	want := strconv.Itoa(nobody)
	if r.UID != want || r.GID != want || !strings.HasPrefix(r.MetadataURI, "http://127.") {
		t.Errorf("the task was given uid %q, gid %q, metadata %q; want this process's ids and the loopback metadata", r.UID, r.GID, r.MetadataURI)
	}
}

type notRootResult struct {
	NotIsolated           []string
	UID, GID, MetadataURI string
}

// TestIsolate_NotRootHelper is what TestIsolate_NotRoot_SaysSoAndFallsBack runs as
// another user; run otherwise, it does nothing.
func TestIsolate_NotRootHelper(t *testing.T) {
	if os.Getenv(envHelperFixture) == "" {
		return
	}
	e := start(t, isolated)
	e.defARN = e.register(t, ecslocal.TaskDefinition{Family: "sandbox", Port: mustAtoi(t, e.port)})
	arn := aws.ToString(e.run(t, runInput("not-root")).TaskArn)
	ip := privateIP(e.waitStatus(t, arn, "RUNNING"))
	r := notRootResult{NotIsolated: e.srv.NotIsolated()}
	for name, dst := range map[string]*string{uidVar: &r.UID, gidVar: &r.GID, "ECS_CONTAINER_METADATA_URI_V4": &r.MetadataURI} {
		_, v := e.get(t, ip, "/env?name="+name)
		*dst = string(v)
	}
	b, _ := json.Marshal(r)
	fmt.Printf("RESULT %s\n", b)
}

// A definition's capabilities and user are checked as ECS checks them for Fargate: only
// SYS_PTRACE may be added, only Linux capabilities (or ALL) dropped, the user is uid or
// uid:gid.
func TestServer_RegisterTaskDefinition_CapabilitiesAndUser(t *testing.T) {
	t.Parallel()
	s := ecslocal.NewServer(t.TempDir())
	base := ecslocal.TaskDefinition{Family: "caps", ContainerName: "agent", Command: []string{"/bin/true"}}
	for name, td := range map[string]ecslocal.TaskDefinition{
		"add NET_ADMIN":   {AddCapabilities: []string{"NET_ADMIN"}},
		"add SYS_ADMIN":   {AddCapabilities: []string{"SYS_ADMIN"}},
		"drop an unknown": {DropCapabilities: []string{"CAP_CHOWN"}},
		"a named user":    {User: "sandbox"},
		"a negative uid":  {User: "-1"},
		"a bad gid":       {User: "10:x"},
	} {
		td.Family, td.ContainerName, td.Command = base.Family, base.ContainerName, base.Command
		if _, err := s.RegisterTaskDefinition(td); !errors.Is(err, ecslocal.ErrInvalidTaskDefinition) {
			t.Errorf("%s: %v, want ErrInvalidTaskDefinition", name, err)
		}
	}
	for name, td := range map[string]ecslocal.TaskDefinition{
		"the template's": {User: "0", DropCapabilities: []string{"NET_RAW", "SETPCAP"}},
		"drop ALL":       {DropCapabilities: []string{"ALL"}},
		"add SYS_PTRACE": {AddCapabilities: []string{"SYS_PTRACE"}},
		"uid:gid":        {User: "1000:1001"},
	} {
		td.Family, td.ContainerName, td.Command = base.Family, base.ContainerName, base.Command
		if _, err := s.RegisterTaskDefinition(td); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
