package agent_test

import (
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Modes of the test binary (testkit.EnvWorkload) for the /proc test.
const (
	modeProtectHelper = "protect-helper" // plays the agent
	modePeek          = "peek"           // plays the workload
	envProtect        = "SANDGATE_AGENT_TEST_PROTECT"
	envPeekPID        = "SANDGATE_AGENT_TEST_PEEK_PID"
)

// peekReport is what the workload could read of the agent's /proc files: the text of
// environ, and each read's error ("" when it succeeded).
type peekReport struct {
	Environ    string `json:"environ"`
	EnvironErr string `json:"environErr"`
	MemErr     string `json:"memErr"`
}

const permissionDenied = "permission denied"

// noExitSleep spares each process of a -race build the race runtime's second of sleep
// at exit; other builds ignore it.
const noExitSleep = "GORACE=atexit_sleep_ms=0"

// protectHelper plays the agent: it calls ProtectProcess when told to, then starts
// the workload (the test binary again, under the agent's own uid as a local stack that
// is not root runs it, without the secrets in its own environment) and passes on its
// report.
func protectHelper() int {
	if os.Getenv(envProtect) == "1" {
		if err := agent.ProtectProcess(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	// The agent finds its own executable after protecting itself (the demo workload's
	// command): a non-dumpable process may still read its own /proc files.
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cmd := exec.Command(self)
	cmd.Env = []string{testkit.EnvWorkload + "=" + modePeek, envPeekPID + "=" + strconv.Itoa(os.Getpid()), noExitSleep}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// peekWorkload plays a workload after the agent's secrets: it reads the agent's
// environ and opens its memory, and reports on stdout what it got.
func peekWorkload() int {
	dir := filepath.Join("/proc", os.Getenv(envPeekPID))
	var r peekReport
	environ, err := os.ReadFile(filepath.Join(dir, "environ"))
	r.Environ, r.EnvironErr = string(environ), peekError(err)
	mem, err := os.Open(filepath.Join(dir, "mem"))
	if err == nil {
		mem.Close()
	}
	r.MemErr = peekError(err)
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

// peekError names a refusal (EACCES or EPERM) alike, whichever check refused.
func peekError(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, fs.ErrPermission):
		return permissionDenied
	}
	return err.Error()
}

// ProtectProcess is the agent's second line, and its only one when the workload
// shares its uid (a local stack that is not root; under its own uid the kernel refuses
// the workload all of this anyway): once the agent has called it, a workload of its
// uid without CAP_SYS_PTRACE cannot read the agent's environment (the lease token, the
// store's keys) or open its memory through /proc; without the call it can, which
// shows the test would catch a ProtectProcess that did nothing.
func TestProtectProcess_SameUIDWorkload_CannotReadTheAgentsEnviron(t *testing.T) {
	exe, dir, cred := unprivilegedTestBinary(t)
	secret := randomSecret(t)
	peek := func(t *testing.T, protect bool) peekReport {
		t.Helper()
		cmd := exec.Command(exe)
		cmd.Dir = dir
		cmd.Env = []string{
			testkit.EnvWorkload + "=" + modeProtectHelper, envProtect + "=" + map[bool]string{true: "1", false: "0"}[protect],
			taskenv.LeaseToken + "=" + secret, s3bucket.EnvSecretAccessKey + "=" + secret,
			noExitSleep,
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, stderr.String())
		}
		var r peekReport
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("helper's report %q: %v\n%s", out, err, stderr.String())
		}
		return r
	}
	t.Run("Unprotected", func(t *testing.T) {
		r := peek(t, false)
		if r.EnvironErr != "" || !strings.Contains(r.Environ, taskenv.LeaseToken+"="+secret) {
			t.Fatalf("without ProtectProcess the workload read environ (error %q) without the secret: "+
				"this system hides /proc otherwise, and the test proves nothing", r.EnvironErr)
		}
	})
	t.Run("Protected", func(t *testing.T) {
		r := peek(t, true)
		if strings.Contains(r.Environ, secret) {
			t.Fatal("the workload read the agent's secrets from /proc/<agent pid>/environ")
		}
		if r.EnvironErr != permissionDenied || r.MemErr != permissionDenied {
			t.Fatalf("environ: %q, mem: %q; want %q for both", r.EnvironErr, r.MemErr, permissionDenied)
		}
	})
}

// unprivilegedTestBinary returns how to run this test binary as a uid without
// CAP_SYS_PTRACE, as the workload runs: as root (CI) a copy that nobody (65534) can
// execute, in a directory it can enter, with that credential; otherwise the binary
// itself as the current uid.
func unprivilegedTestBinary(t *testing.T) (exe, dir string, cred *syscall.Credential) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return self, t.TempDir(), nil
	}
	// t.TempDir's parent is private to root, as is the build's directory.
	dir, err = os.MkdirTemp("", "sandgate-protect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, filepath.Base(self))
	if err := copyExecutable(self, exe); err != nil {
		t.Fatal(err)
	}
	return exe, dir, &syscall.Credential{Uid: 65534, Gid: 65534}
}

func copyExecutable(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return dst.Close()
}

func randomSecret(t *testing.T) string {
	var b [16]byte
	if _, err := crand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "secret-" + hex.EncodeToString(b[:])
}
