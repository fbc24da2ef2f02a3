package workload_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/workload"
)

// Modes of the test binary for the reaper test.
const (
	modeOrphaner     = "orphaner"      // a workload that leaves a child behind
	modeLinger       = "linger"        // that child
	modeReaperHelper = "reaper-helper" // a process with a Reaper, as the agent
	envHelperDir     = "SANDGATE_TEST_DIR"
	envHelperPort    = "SANDGATE_TEST_PORT"
	envNoPdeath      = "SANDGATE_TEST_NO_PDEATH"
)

// orphaner starts a child that outlives it, serves the child's pid on its port, and
// exits with status 7 on SIGUSR1 without waiting for the child. With
// SANDGATE_TEST_NO_PDEATH unset the child dies as it is orphaned (its parent-death
// signal); set, it lives on as an orphan.
func orphaner() int {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	child := exec.Command("/proc/self/exe")
	child.Env = []string{envMode + "=" + modeLinger, noExitSleep}
	if os.Getenv(envNoPdeath) == "" {
		child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := child.Start(); err != nil {
		return 1
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv(workload.EnvHost), os.Getenv(workload.EnvPort)))
	if err != nil {
		return 1
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, child.Process.Pid)
	}))
	<-usr1
	return 7
}

// reaperReport is what the helper saw.
type reaperReport struct {
	ExitAtOnce    string // Start's error for a workload that exits at once
	Exit          string // the orphaner's exit error
	Child, Orphan int    // the orphaner's child, and the orphan the reaper reaped
	Lingering     int    // the child left alive by the second orphaner
	Killed        int    // what KillOrphans killed
	Clean         bool   // and whether none was left
	KilledOrphan  string // the status the reaper reaped the killed orphan with
	Children      []int  // the helper's children at the end
	Err           string
}

// reaperHelper plays the agent with a Reaper and reports on stdout.
func reaperHelper() int {
	var rep reaperReport
	defer func() { json.NewEncoder(os.Stdout).Encode(rep) }()
	type reaped struct {
		pid int
		ws  syscall.WaitStatus
	}
	orphans := make(chan reaped, 16)
	r, err := workload.StartReaper(func(pid int, ws syscall.WaitStatus) { orphans <- reaped{pid, ws} })
	if err != nil {
		rep.Err = err.Error()
		return 1
	}
	defer r.Close()
	port, _ := strconv.Atoi(os.Getenv(envHelperPort))
	uid, gid := identity()
	cfg := func(mode string, env ...string) workload.Config {
		return workload.Config{
			Command: []string{"/proc/self/exe"}, Dir: os.Getenv(envHelperDir), Host: "127.0.0.1", Port: port,
			UserID: "user_abc", UID: uid, GID: gid, Reaper: r,
			Env: append(env, envMode+"="+mode, "PATH="+os.Getenv("PATH"), noExitSleep),
		}
	}
	fail := func(err error) int { rep.Err = err.Error(); return 1 }
	waitOrphan := func() (reaped, error) {
		select {
		case o := <-orphans:
			return o, nil
		case <-time.After(30 * time.Second): // a guard, not a pace: the reaper signals
			return reaped{}, errors.New("no orphan reaped in 30 s")
		}
	}
	ctx := context.Background()

	// Exiting at once, the workload is reaped while Start may still be registering
	// it: its status must reach Start all the same.
	if _, err := workload.Start(ctx, cfg("exit")); err != nil {
		rep.ExitAtOnce = err.Error()
	}

	// A workload exits and orphans its child, which dies reparented to us.
	p, err := workload.Start(ctx, cfg(modeOrphaner))
	if err != nil {
		return fail(err)
	}
	if rep.Child, err = childPid(p.Addr()); err != nil {
		return fail(err)
	}
	syscall.Kill(p.Pid(), syscall.SIGUSR1)
	<-p.Done()
	rep.Exit = fmt.Sprint(p.Err())
	o, err := waitOrphan()
	if err != nil {
		return fail(err)
	}
	rep.Orphan = o.pid

	// One left alive is killed by KillOrphans, and reaped.
	p, err = workload.Start(ctx, cfg(modeOrphaner, envNoPdeath+"=1"))
	if err != nil {
		return fail(err)
	}
	if rep.Lingering, err = childPid(p.Addr()); err != nil {
		return fail(err)
	}
	syscall.Kill(p.Pid(), syscall.SIGUSR1)
	<-p.Done()
	rep.Killed, rep.Clean = r.KillOrphans(30 * time.Second)
	if o, err = waitOrphan(); err != nil {
		return fail(err)
	}
	if o.pid == rep.Lingering {
		rep.KilledOrphan = o.ws.Signal().String()
	}
	rep.Children = children()
	return 0
}

func childPid(addr string) (int, error) {
	resp, err := http.Get("http://" + addr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(b))
}

func children() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var out []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(s)
			out = append(out, pid)
		}
	}
	return out
}

// The Reaper, in a process of its own as the agent runs it (it reaps every child, so
// it cannot share this test process with os/exec): a workload's exit status reaches
// its Process even when it exits at once; an orphan the workload leaves behind is
// reparented to the subreaper and reaped; one still alive is killed by KillOrphans;
// and no child, zombie or not, is left.
func TestReaper_OrphansReaped_WorkloadStatusKept(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{envMode + "=" + modeReaperHelper, envHelperDir + "=" + workspace(t),
		envHelperPort + "=" + strconv.Itoa(freePort(t)), "PATH=" + os.Getenv("PATH"), noExitSleep}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep reaperReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("helper: %v, report %q: %v\n%s", err, out, jerr, stderr.String())
	}
	if err != nil || rep.Err != "" {
		t.Fatalf("helper: %v: %s\n%s", err, rep.Err, stderr.String())
	}
	if !strings.Contains(rep.ExitAtOnce, "exit status 3") {
		t.Errorf("a workload exiting at once: Start = %q, want its exit status 3", rep.ExitAtOnce)
	}
	if rep.Exit != "exit status 7" {
		t.Errorf("the orphaner's exit = %q, want exit status 7", rep.Exit)
	}
	if rep.Child == 0 || rep.Orphan != rep.Child {
		t.Errorf("reaped orphan %d, want the orphaned child %d", rep.Orphan, rep.Child)
	}
	if rep.Killed != 1 || !rep.Clean || rep.KilledOrphan != syscall.SIGKILL.String() {
		t.Errorf("KillOrphans killed %d (clean %v), reaped %q; want the lingering child %d killed and reaped",
			rep.Killed, rep.Clean, rep.KilledOrphan, rep.Lingering)
	}
	if len(rep.Children) != 0 {
		t.Errorf("children left: %v", rep.Children)
	}
	for _, pid := range []int{rep.Child, rep.Lingering} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("process %d still exists (a zombie nobody reaped?)", pid)
		}
	}
}
