package proc_test

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/proc"
)

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestProcess_Stop_GracefulThenKill(t *testing.T) {
	// A shell that ignores SIGTERM and has a child: both must be gone after Stop.
	cmd := exec.Command("sh", "-c", `trap '' TERM; sleep 60 & echo $!; wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := proc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	child, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("child pid: %q", buf[:n])
	}
	start := time.Now()
	err = p.Stop(200 * time.Millisecond)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("Stop = %v, want killed by SIGKILL", err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("SIGKILL sent before the grace period")
	}
	deadline := time.Now().Add(30 * time.Second) // a guard: the group's kill is asynchronous
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(child) {
		t.Fatalf("grandchild %d survived", child)
	}
	if err2 := p.Stop(time.Second); err2 != err {
		t.Fatalf("second Stop = %v, want %v", err2, err)
	}
}

func TestProcess_Stop_ExitsOnTerm(t *testing.T) {
	p, err := proc.Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop(10 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("Stop = %v, want exit by SIGTERM", err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}

func TestStart_MissingBinary(t *testing.T) {
	if _, err := proc.Start(exec.Command("/nonexistent/bootstrap")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Start = %v, want ErrNotExist", err)
	}
}
