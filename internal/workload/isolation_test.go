package workload_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sandgate/sandgate/internal/workload"
)

// procStatus reads the fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// procLimit reads one limit of /proc/<pid>/limits: its soft and hard values.
func procLimit(t *testing.T, pid int, name string) (soft, hard string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			return f[0], f[1]
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", name, pid)
	return "", ""
}

// procStat reads /proc/<pid>/stat's fields after the command name: state is [0],
// the process group [2], the nice value [16].
func procStat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// The workload runs as its own uid and gid with no supplementary group, no capability
// in any set, no_new_privs, its own process group, the configured limits, nice value
// and oom_score_adj — all read from the kernel's view of the real child.
func TestStart_Isolation_CredentialsLimitsAndPrivileges(t *testing.T) {
	requireRoot(t)
	cfg := config(t, "serve")
	cfg.Limits = workload.Limits{Procs: 300, Files: 1000, AddressSpace: 64 << 30, Nice: 7}
	p := start(t, cfg)
	pid := p.Pid()

	st := procStatus(t, pid)
	want := map[string]string{
		"Uid": "10001 10001 10001 10001", "Gid": "10001 10001 10001 10001", "Groups": "",
		"NoNewPrivs": "1", "CapInh": "0000000000000000", "CapPrm": "0000000000000000",
		"CapEff": "0000000000000000", "CapAmb": "0000000000000000",
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("/proc/%d/status %s = %q, want %q", pid, k, st[k], v)
		}
	}
	// The bounding set is the container's (Docker's defaults minus the task
	// definition's drops); with no capability held and no_new_privs, no exec can
	// raise the workload into it.
	t.Logf("CapBnd %s (not reachable: CapPrm is empty and NoNewPrivs is set)", st["CapBnd"])

	for name, want := range map[string]string{
		"Max processes": "300", "Max open files": "1000", "Max address space": strconv.Itoa(64 << 30),
	} {
		if soft, hard := procLimit(t, pid, name); soft != want || hard != want {
			t.Errorf("%s = %s/%s, want %s for both", name, soft, hard, want)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); err != nil || strings.TrimSpace(string(b)) != "1000" {
		t.Errorf("oom_score_adj = %q (%v), want 1000", b, err)
	}
	stat := procStat(t, pid)
	if stat[2] != strconv.Itoa(pid) {
		t.Errorf("process group %s, want its own (%d)", stat[2], pid)
	}
	if stat[16] != "7" {
		t.Errorf("nice %s, want 7", stat[16])
	}
}

// The workload's environment is the allowlist and nothing else: a variable of the
// agent's environment never reaches it, a declared one does, and the platform's own
// (HOME among them) win over a declared value of the same name.
func TestStart_Environment_Allowlist(t *testing.T) {
	t.Setenv("AGENT_SECRET", "s3cr3t")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/secret")
	cfg := config(t, "serve", "DECLARED=yes", "HOME=/elsewhere", "DECLARED=second")
	p := start(t, cfg)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := got[k]; dup {
			t.Errorf("%s twice", k)
		}
		got[k] = v
	}
	want := map[string]string{
		"HOST": "127.0.0.1", "PORT": strconv.Itoa(cfg.Port), "SANDGATE_WORKSPACE": cfg.Dir, "HOME": cfg.Dir,
		"SANDGATE_USER_ID": "user_abc", "DECLARED": "yes", "PATH": os.Getenv("PATH"), envMode: "serve",
		"GORACE": "atexit_sleep_ms=0",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the workload received %s, which is not on the allowlist", k)
		}
	}
}

// Modes of the test binary for the attack test.
const (
	modeAttack = "attack"
	envTarget  = "SANDGATE_TEST_TARGET"
)

// attackReport is what a workload got when it went after the agent's process: each
// attempt's error, "" for a success.
type attackReport struct {
	Kill0, Stop, Ptrace, Environ, Mem, Cmdline string
}

// attack plays a hostile workload: it serves its port, and on a request goes after
// the process named by SANDGATE_TEST_TARGET, undoing at once whatever succeeded.
func attack() int {
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv(workload.EnvHost), os.Getenv(workload.EnvPort)))
	if err != nil {
		return 1
	}
	target, _ := strconv.Atoi(os.Getenv(envTarget))
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep attackReport
		rep.Kill0 = errText(syscall.Kill(target, 0))
		err := syscall.Kill(target, syscall.SIGSTOP)
		if err == nil {
			syscall.Kill(target, syscall.SIGCONT)
		}
		rep.Stop = errText(err)
		runtime.LockOSThread()
		err = syscall.PtraceAttach(target)
		if err == nil {
			syscall.PtraceDetach(target)
		}
		runtime.UnlockOSThread()
		rep.Ptrace = errText(err)
		_, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", target))
		rep.Environ = errText(err)
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", target))
		if err == nil {
			f.Close()
		}
		rep.Mem = errText(err)
		_, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", target))
		rep.Cmdline = errText(err) // readable by design: no secret is ever on a command line
		json.NewEncoder(w).Encode(rep)
	}))
	return 1
}

// From its own uid, the workload can neither signal the process that started it (not
// even probe it with signal 0; the kernel checks every signal alike, SIGKILL included)
// nor stop or ptrace it, nor read its environment or memory.
func TestStart_Isolation_CannotSignalOrTraceTheAgent(t *testing.T) {
	requireRoot(t)
	cfg := config(t, modeAttack, envTarget+"="+strconv.Itoa(os.Getpid()))
	p := start(t, cfg)
	var rep attackReport
	if err := json.Unmarshal([]byte(get(t, "http://"+p.Addr())), &rep); err != nil {
		t.Fatal(err)
	}
	eperm, eacces := syscall.EPERM.Error(), syscall.EACCES.Error()
	for what, got := range map[string]string{"kill 0": rep.Kill0, "SIGSTOP": rep.Stop, "ptrace": rep.Ptrace} {
		if got != eperm {
			t.Errorf("%s of the agent: %q, want %q", what, got, eperm)
		}
	}
	for what, got := range map[string]string{"environ": rep.Environ, "mem": rep.Mem} {
		if !strings.HasSuffix(got, eacces) && !strings.HasSuffix(got, eperm) {
			t.Errorf("reading the agent's %s: %q, want a refusal", what, got)
		}
	}
	if rep.Cmdline != "" {
		t.Logf("cmdline: %s", rep.Cmdline)
	}
}

// CheckAccess goes by the mode bits of every directory on the way, owner, group and
// others in turn.
func TestCheckAccess(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string, mode fs.FileMode, uid, gid int) string {
		p := filepath.Join(root, rel)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	if err := os.Chmod(filepath.Dir(root), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	me, mygid := os.Geteuid(), os.Getegid()
	open := mk("open", 0o711, me, mygid)
	if err := workload.CheckAccess(open, 4242, 4242); err != nil {
		t.Errorf("others may search %s: %v", open, err)
	}
	closed := mk("closed", 0o750, me, mygid)
	var ae *workload.AccessError
	if err := workload.CheckAccess(filepath.Join(closed), 4242, 4242); !errors.As(err, &ae) || ae.Dir != closed {
		t.Errorf("CheckAccess = %v, want an AccessError naming %s", err, closed)
	}
	if err := workload.CheckAccess(closed, 4242, uint32(mygid)); err != nil {
		t.Errorf("the group may search %s: %v", closed, err)
	}
	if err := workload.CheckAccess(closed, uint32(me), 4242); err != nil {
		t.Errorf("the owner may search %s: %v", closed, err)
	}
	if err := workload.CheckAccess(filepath.Join(closed, "missing"), 4242, 4242); err == nil {
		t.Error("CheckAccess of a missing path succeeded")
	}
}
