package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/workload"
)

// requireRoot fails a test that proves isolation: without root there is no second uid
// to isolate the workload with, and a skip would read as a pass.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test must run as root (as CI does): the agent starts the workload under a uid of its own")
	}
}

// owner returns path's mode and owner, not following a symlink.
func owner(t *testing.T, path string) (fs.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

// The restored workspace belongs to the workload's uid, which writes into a directory
// the restore made; DATA_DIR and the state directory stay the agent's; and the final
// sync reads what the workload wrote.
func TestAgent_Run_WorkspaceHandedToTheWorkload(t *testing.T) {
	requireRoot(t)
	h := newHarness(t, nil)
	ctx := context.Background()
	// What an earlier sandbox of the user stored.
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "notes"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "notes", "0-restored.txt"), []byte("from the bucket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("notes/0-restored.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	seed, err := objsync.New(h.bucket, taskenv.UserPrefix(h.userID), src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	cl := h.connect()
	h.acquire()
	a := h.agent(h.store, h.bucket)
	stop, result := h.run(a)
	target := h.running()
	cfg := a.Config

	ws := cfg.Workspace()
	for path, want := range map[string]struct {
		mode     fs.FileMode
		uid, gid uint32
	}{
		cfg.DataDir:                {fs.ModeDir | 0o711, 0, 0},
		cfg.StatePath():            {fs.ModeDir | 0o700, 0, 0},
		ws:                         {fs.ModeDir | 0o700, workload.DefaultUID, workload.DefaultGID},
		filepath.Join(ws, "notes"): {fs.ModeDir | 0o755, workload.DefaultUID, workload.DefaultGID},
		filepath.Join(ws, "notes", "0-restored.txt"): {0o600, workload.DefaultUID, workload.DefaultGID},
		filepath.Join(ws, "link"):                    {fs.ModeSymlink | 0o777, workload.DefaultUID, workload.DefaultGID},
	} {
		if mode, uid, gid := owner(t, path); mode != want.mode || uid != want.uid || gid != want.gid {
			t.Errorf("%s: %s %d:%d, want %s %d:%d", path, mode, uid, gid, want.mode, want.uid, want.gid)
		}
	}
	err = filepath.WalkDir(cfg.StatePath(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, uid, _ := owner(t, path); uid != 0 {
			t.Errorf("%s of the agent's state belongs to uid %d", path, uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	cl.until(isFrame(frames.TypeStatus, frames.Ready))
	if err := h.api.Deliver(ctx, target, cl.id, []byte("/note written by the workload's uid")); err != nil {
		t.Fatal(err)
	}
	cl.until(func(f string) bool { return strings.Contains(f, `"note.saved"`) })
	if err := h.api.Deliver(ctx, target, cl.id, []byte("/notes")); err != nil {
		t.Fatal(err)
	}
	list := cl.until(func(f string) bool { return strings.Contains(f, `"type":"notes"`) })
	if !strings.Contains(list, "from the bucket") || !strings.Contains(list, "written by the workload") {
		t.Errorf("the workload listed %s, want the restored note and its own", list)
	}

	stop()
	if err := result(); err != nil {
		t.Fatal(err)
	}
	page, err := h.bucket.List(ctx, taskenv.UserPrefix(h.userID)+"files/notes/", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Objects) != 2 {
		t.Errorf("stored notes %v, want the restored one and the workload's", page.Objects)
	}
}

// The workload the agent starts runs under WORKLOAD_UID and WORKLOAD_GID with
// no_new_privs and no capability, and its environment holds none of the agent's: not
// the lease token, the store's keys or an undeclared variable, while a declared one
// arrives.
func TestAgent_Run_WorkloadIsolated(t *testing.T) {
	requireRoot(t)
	h := newHarness(t, map[string]string{
		s3bucket.EnvAccessKeyID: "local", s3bucket.EnvSecretAccessKey: "agent-secret-key",
		"UNDECLARED": "agent-only", "TEAM_SETTING": "for-the-workload", agent.EnvWorkloadUID: "20002", agent.EnvWorkloadGID: "20003",
	})
	h.vars[agent.EnvWorkloadEnv] += ",TEAM_SETTING"
	h.acquire()
	a := h.agent(h.store, h.bucket)
	h.run(a)
	h.running()
	pids := workloadPids(a.Config.Workspace())
	if len(pids) != 1 {
		t.Fatalf("workload processes %v, want one", pids)
	}
	pid := pids[0]
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t20002\t20002\t20002\t20002", "Gid:\t20003\t20003\t20003\t20003",
		"NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000"} {
		if !strings.Contains(string(status), want+"\n") {
			t.Errorf("/proc/%d/status lacks %q:\n%s", pid, want, status)
		}
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(string(environ), "\x00")
	for _, secret := range []string{h.lease.Token, "agent-secret-key", "agent-only"} {
		if strings.Contains(string(environ), secret) {
			t.Errorf("the workload's environment holds %q", secret)
		}
	}
	for _, want := range []string{"TEAM_SETTING=for-the-workload", "HOME=" + a.Config.Workspace()} {
		if !slices.Contains(env, want) {
			t.Errorf("the workload's environment lacks %s: %q", want, env)
		}
	}
}

// workloadPids returns the processes whose working directory is workspace.
func workloadPids(workspace string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == workspace {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Modes of the test binary for the capability test.
const (
	modeCapBound   = "cap-bound"  // drops the bounding set, then execs modeCapAgent
	modeCapAgent   = "cap-agent"  // the agent's privileged steps, with what is left
	modeCapWriter  = "cap-writer" // the workload: writes a private file, then listens
	envCapKeep     = "SANDGATE_AGENT_TEST_CAPS"
	envCapDataDir  = "SANDGATE_AGENT_TEST_DATA_DIR"
	envCapPort     = "SANDGATE_AGENT_TEST_PORT"
	privateDir     = "private"
	privateFile    = "secret.txt"
	restoredFile   = "restored.txt"
	capLastCapFile = "/proc/sys/kernel/cap_last_cap"
)

// capNumbers are the numbers of Docker's default capabilities (linux/capability.h).
var capNumbers = map[string]int{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
	"SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
	"AUDIT_WRITE": 29, "SETFCAP": 31,
}

// capReport is what the agent's steps came to with the capabilities left: each step's
// error, "" for a success, and the effective set it ran with.
type capReport struct {
	CapEff                         string
	Prepare, HandOver, Start, Read string
	Signal, Exit                   string
	Fatal                          string
}

// capBound plays the container runtime: it drops from the bounding set every
// capability not named in SANDGATE_AGENT_TEST_CAPS, on the thread that then execs the
// agent's steps as root, whose permitted and effective sets are then exactly those
// named, as a Fargate container's are after the task definition's drops.
func capBound() int {
	runtime.LockOSThread()
	keep := strings.Split(os.Getenv(envCapKeep), ",")
	b, err := os.ReadFile(capLastCapFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	last, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	kept := map[int]bool{}
	for _, name := range keep {
		if n, ok := capNumbers[name]; ok {
			kept[n] = true
		}
	}
	for c := 0; c <= last; c++ {
		if kept[c] {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			fmt.Fprintf(os.Stderr, "drop capability %d: %v\n", c, e)
			return 2
		}
	}
	env := append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, testkit.EnvWorkload+"=") }),
		testkit.EnvWorkload+"="+modeCapAgent)
	err = syscall.Exec("/proc/self/exe", []string{os.Args[0]}, env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 2
}

// capAgent runs the agent's privileged steps in order and reports each one's outcome:
// prepare DATA_DIR, stand in for a restore (root-owned files), hand the workspace to
// the workload's uid, start the workload (which writes a private file), read that
// file as a sync does, and SIGTERM the workload's group. A step that fails ends it.
func capAgent() int {
	var rep capReport
	defer func() { json.NewEncoder(os.Stdout).Encode(rep) }()
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				rep.CapEff = strings.TrimSpace(v)
			}
		}
	}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	cfg := agent.Config{DataDir: os.Getenv(envCapDataDir), WorkloadUID: workload.DefaultUID, WorkloadGID: workload.DefaultGID}
	if rep.Prepare = errText(agent.PrepareDirs(cfg)); rep.Prepare != "" {
		return 0
	}
	ws := cfg.Workspace()
	if err := os.WriteFile(filepath.Join(ws, restoredFile), []byte("restored\n"), 0o644); err != nil {
		rep.Fatal = err.Error()
		return 0
	}
	if rep.HandOver = errText(agent.HandOver(cfg)); rep.HandOver != "" {
		return 0
	}
	port, _ := strconv.Atoi(os.Getenv(envCapPort))
	p, err := workload.Start(context.Background(), workload.Config{
		Command: []string{"/proc/self/exe"}, Dir: ws, Host: "127.0.0.1", Port: port, UserID: "user_caps",
		UID: cfg.WorkloadUID, GID: cfg.WorkloadGID, Env: []string{testkit.EnvWorkload + "=" + modeCapWriter, noExitSleep},
		ReadyTimeout: 20 * time.Second,
	})
	if rep.Start = errText(err); err != nil {
		return 0
	}
	_, err = os.ReadFile(filepath.Join(ws, privateDir, privateFile))
	rep.Read = errText(err)
	// Without CAP_KILL the signal fails; the workload dies with this process then
	// (its parent-death signal needs no capability).
	if rep.Signal = errText(syscall.Kill(-p.Pid(), syscall.SIGTERM)); rep.Signal == "" {
		select {
		case <-p.Done():
			rep.Exit = errText(p.Err())
		case <-time.After(20 * time.Second):
			rep.Exit = "still running 20 s after SIGTERM"
		}
	}
	return 0
}

// capWriter is the workload of the capability test: it appends to the restored file
// (which it can only if the workspace was handed over), writes a file only its uid
// may read, then serves its port until SIGTERM.
func capWriter() int {
	f, err := os.OpenFile(restoredFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(f, "and appended by the workload")
	f.Close()
	if err := os.Mkdir(privateDir, 0o700); err != nil {
		return 1
	}
	if err := os.WriteFile(filepath.Join(privateDir, privateFile), []byte("the workload's"), 0o600); err != nil {
		return 1
	}
	ln := testkit.ListenWorkload()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go http.Serve(ln, http.NotFoundHandler())
	<-term
	return 0
}

// runCapAgent runs the agent's steps with only keep left of the capabilities.
func runCapAgent(t *testing.T, keep []string) capReport {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{testkit.EnvWorkload + "=" + modeCapBound, envCapKeep + "=" + strings.Join(keep, ","),
		envCapDataDir + "=" + dataDir(t), envCapPort + "=" + strconv.Itoa(freePort(t)), noExitSleep}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep capReport
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil {
		t.Fatalf("helper: %v; report %q: %v\n%s", err, out, jerr, stderr.String())
	}
	if rep.Fatal != "" {
		t.Fatalf("helper: %s\n%s", rep.Fatal, stderr.String())
	}
	return rep
}

func capMask(names []string) string {
	var m uint64
	for _, n := range names {
		m |= 1 << capNumbers[n]
	}
	return fmt.Sprintf("%016x", m)
}

// The capabilities the task definition leaves the agent (agent.Capabilities: Docker's
// defaults minus the template's drops, which templatecheck holds to this list) are
// enough for every privileged step of the agent, and each one of them is needed: with
// it dropped too, the step that needs it fails.
func TestCapabilities_KeptSetSufficesAndEachIsNeeded(t *testing.T) {
	requireRoot(t)
	rep := runCapAgent(t, agent.Capabilities)
	if rep.CapEff != capMask(agent.Capabilities) {
		t.Fatalf("the helper ran with CapEff %s, want %s", rep.CapEff, capMask(agent.Capabilities))
	}
	for step, err := range map[string]string{"prepare": rep.Prepare, "hand over": rep.HandOver, "start": rep.Start,
		"read": rep.Read, "signal": rep.Signal, "exit": rep.Exit} {
		if err != "" {
			t.Errorf("with %v, %s failed: %s", agent.Capabilities, step, err)
		}
	}
	needs := map[string]func(capReport) string{
		"CHOWN":        func(r capReport) string { return r.HandOver },
		"DAC_OVERRIDE": func(r capReport) string { return r.Read },
		"KILL":         func(r capReport) string { return r.Signal },
		"SETGID":       func(r capReport) string { return r.Start },
		"SETUID":       func(r capReport) string { return r.Start },
	}
	for _, c := range agent.Capabilities {
		t.Run("Without"+c, func(t *testing.T) {
			step, ok := needs[c]
			if !ok {
				t.Fatalf("no step is known to need %s: say which, or drop it", c)
			}
			r := runCapAgent(t, slices.DeleteFunc(slices.Clone(agent.Capabilities), func(s string) bool { return s == c }))
			if got := step(r); !strings.Contains(got, "operation not permitted") && !strings.Contains(got, "permission denied") {
				t.Errorf("without %s the step that needs it gave %q, want a refusal (report %+v)", c, got, r)
			}
		})
	}
}

// An agent that is not root cannot give the workload a uid of its own, and says so
// before anything starts, naming the way out (the agent's own ids, no isolation).
func TestPrepareDirs_NotRoot_Explains(t *testing.T) {
	requireRoot(t) // to play the agent as another uid
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{testkit.EnvWorkload + "=" + modeCapAgent, envCapDataDir + "=" + t.TempDir(), noExitSleep}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	var rep capReport
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil {
		t.Fatalf("helper: %v; report %q: %v", err, out, jerr)
	}
	if want := "set WORKLOAD_UID and WORKLOAD_GID to 65534 and 65534"; !strings.Contains(rep.Prepare, want) {
		t.Fatalf("PrepareDirs as uid 65534: %q, want it to say %q", rep.Prepare, want)
	}
}
