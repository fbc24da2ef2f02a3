package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The variables the workload always receives. With PassThrough and the names the team
// declares (Config.Env), they are its whole environment.
const (
	EnvHost      = "HOST"               // address to listen on (loopback)
	EnvPort      = "PORT"               // port to listen on
	EnvWorkspace = "SANDGATE_WORKSPACE" // the user's files; also the working directory
	EnvUserID    = "SANDGATE_USER_ID"   // the user this sandbox serves
	EnvHome      = "HOME"               // the workspace too
)

// Own lists the variables Start sets itself; a value of the same name in Config.Env is
// ignored.
var Own = []string{EnvHost, EnvPort, EnvWorkspace, EnvUserID, EnvHome}

// PassThrough are the variables of the agent's environment the workload receives as
// they are, when set: nothing in them is a secret.
var PassThrough = []string{"PATH", "LANG", "LC_ALL", "TZ"}

// DefaultPath is the workload's PATH when the agent has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The workload's default identity: a uid and gid of its own, which owns the workspace
// and nothing else.
const (
	DefaultUID = 10001
	DefaultGID = 10001
)

// DefaultReadyTimeout bounds how long a workload may take to start listening.
const DefaultReadyTimeout = 30 * time.Second

// ErrExited means the workload exited before it was ready.
var ErrExited = errors.New("workload exited")

// selfExe starts the launcher stage: this binary, reached through the magic link, so
// the workload's uid needs no access to the directory the agent's binary lies in.
const selfExe = "/proc/self/exe"

// Config describes one workload.
type Config struct {
	// Command is the program and its arguments; a name without a slash is looked up
	// in the workload's PATH.
	Command []string
	// Dir is the user's workspace and the working directory. The workload's uid must
	// be able to reach it (CheckAccess).
	Dir string
	// Host and Port are where the workload must listen.
	Host string
	Port int
	// UserID is passed on in the environment.
	UserID string
	// UID and GID are the workload's credentials, never 0; it gets no supplementary
	// groups. When they are this process's own effective ids the workload keeps this
	// process's uid (and groups): only for a local stack that does not run as root,
	// where nothing isolates the workload from the agent.
	UID, GID uint32
	// Env is the rest of the workload's environment, NAME=value: the pass-through
	// variables and the names the team declared. Nothing else of this process's
	// environment reaches the workload.
	Env []string
	// Limits are applied by the launcher before the program runs.
	Limits Limits
	// Reaper, when set, collects the workload's exit status; a process that has one
	// must start every child through it. Without one the status is waited for
	// directly.
	Reaper *Reaper
	// Stdout and Stderr receive the workload's output (nil discards).
	Stdout, Stderr io.Writer
	// ReadyTimeout bounds the wait for the port to accept (DefaultReadyTimeout).
	ReadyTimeout time.Duration
}

// ParseCommand splits SANDBOX_COMMAND on spaces. There is no shell and no quoting:
// wrap a program that needs either in a script.
func ParseCommand(s string) []string { return strings.Fields(s) }

// environ is the workload's whole environment: Start's own variables, then those of
// cfg.Env that are not Start's (the first of each name).
func environ(cfg Config) []string {
	out := []string{
		fmt.Sprintf("%s=%s", EnvHost, cfg.Host),
		fmt.Sprintf("%s=%d", EnvPort, cfg.Port),
		EnvWorkspace + "=" + cfg.Dir,
		EnvHome + "=" + cfg.Dir,
		EnvUserID + "=" + cfg.UserID,
	}
	seen := map[string]bool{}
	for _, kv := range cfg.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || seen[name] || slices.Contains(Own, name) {
			continue
		}
		seen[name] = true
		out = append(out, kv)
	}
	return out
}

// ExitError is a workload's exit other than status 0: a non-zero status or a signal.
type ExitError struct {
	Status syscall.WaitStatus
}

func (e *ExitError) Error() string {
	if e.Status.Signaled() {
		return "signal: " + e.Status.Signal().String()
	}
	return fmt.Sprintf("exit status %d", e.Status.ExitStatus())
}

// ExitCode is the exit status, or -1 when a signal ended the workload.
func (e *ExitError) ExitCode() int { return e.Status.ExitStatus() }

func exitErr(ws syscall.WaitStatus) error {
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	return &ExitError{Status: ws}
}

// Process is a running workload.
type Process struct {
	pid  int
	done chan struct{}
	err  error
	addr string
}

// Start starts the workload and waits until its port accepts connections.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("start workload: no command")
	}
	if cfg.UID == 0 || cfg.GID == 0 {
		return nil, fmt.Errorf("start workload: uid %d, gid %d: the workload never runs as root", cfg.UID, cfg.GID)
	}
	cred := &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: []uint32{}}
	if cfg.UID == uint32(os.Geteuid()) && cfg.GID == uint32(os.Getegid()) {
		// Our own ids: setgroups would need CAP_SETGID, which a non-root agent lacks.
		cred.NoSetGroups = true
	} else if err := CheckAccess(cfg.Dir, cfg.UID, cfg.GID); err != nil {
		return nil, fmt.Errorf("start workload: %w", err)
	}
	out, err := newOutputs(cfg.Stdout, cfg.Stderr)
	if err != nil {
		return nil, fmt.Errorf("start workload: %w", err)
	}
	attr := &os.ProcAttr{
		Dir: cfg.Dir, Env: environ(cfg), Files: out.files,
		Sys: &syscall.SysProcAttr{
			Credential: cred,
			// Its own process group, so SIGTERM reaches whatever the workload spawned.
			Setpgid: true,
			// Set by the child after it changed its credentials (which clear it).
			Pdeathsig: syscall.SIGKILL,
		},
	}
	argv := launcherArgs(cfg.Limits, cfg.Command)
	start := func() (*os.Process, error) { return os.StartProcess(selfExe, argv, attr) }
	var proc *os.Process
	var exited <-chan syscall.WaitStatus
	if cfg.Reaper != nil {
		proc, exited, err = cfg.Reaper.start(start)
	} else {
		proc, err = start()
	}
	out.started()
	if err != nil {
		out.exited()
		if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
			err = fmt.Errorf("%w (this process cannot change its uid: run as root, or set the workload's uid and gid to its own, %d:%d, which isolates nothing)", err, os.Geteuid(), os.Getegid())
		}
		return nil, fmt.Errorf("start workload %s: %w", cfg.Command[0], err)
	}
	p := &Process{pid: proc.Pid, done: make(chan struct{}), addr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))}
	go func() {
		if exited != nil {
			p.err = exitErr(<-exited)
			proc.Release()
		} else if st, err := proc.Wait(); err != nil {
			p.err = fmt.Errorf("wait for workload: %w", err)
		} else {
			p.err = exitErr(st.Sys().(syscall.WaitStatus))
		}
		out.exited()
		close(p.done)
	}()

	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	if err := p.waitReady(ctx, timeout); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return p, nil
}

func (p *Process) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w before listening on %s: %v", ErrExited, p.addr, p.err)
		case <-ctx.Done():
			return fmt.Errorf("wait for workload: %w", ctx.Err())
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workload not listening on %s after %s", p.addr, timeout)
		}
	}
}

// Addr is where the workload listens.
func (p *Process) Addr() string { return p.addr }

// Pid is the workload's process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the workload has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the workload's exit error (an *ExitError, or nil for status 0), valid after
// Done.
func (p *Process) Err() error { <-p.done; return p.err }

// Stop sends SIGTERM to the workload's process group and waits up to grace for it to
// flush and exit, then kills the group, including what the workload left running in
// it. (A group id stays taken while any member lives, so the kill cannot reach a
// stranger.)
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
	return p.err
}
