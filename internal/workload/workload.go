package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Environment the workload receives, beside the agent's own.
const (
	EnvHost      = "HOST"               // address to listen on (loopback)
	EnvPort      = "PORT"               // port to listen on
	EnvWorkspace = "SANDGATE_WORKSPACE" // the user's files; also the working directory
	EnvUserID    = "SANDGATE_USER_ID"   // the user this sandbox serves
)

// DefaultReadyTimeout bounds how long a workload may take to start listening.
const DefaultReadyTimeout = 30 * time.Second

// ErrExited means the workload exited before it was ready.
var ErrExited = errors.New("workload exited")

// Config describes one workload.
type Config struct {
	// Command is the program and its arguments.
	Command []string
	// Dir is the user's workspace and the working directory.
	Dir string
	// Host and Port are where the workload must listen.
	Host string
	Port int
	// UserID is passed on in the environment.
	UserID string
	// Env is added to the agent's environment.
	Env []string
	// Unset names variables of the agent's environment the workload must not inherit:
	// the agent's own secrets (its lease token, store keys), which the workload, often
	// running the user's code, has no use for.
	Unset []string
	// Stdout and Stderr receive the workload's output (nil discards).
	Stdout, Stderr io.Writer
	// ReadyTimeout bounds the wait for the port to accept (DefaultReadyTimeout).
	ReadyTimeout time.Duration
}

// ParseCommand splits SANDBOX_COMMAND on spaces. There is no shell and no quoting:
// wrap a program that needs either in a script.
func ParseCommand(s string) []string { return strings.Fields(s) }

// inherit returns environ without the variables named in unset.
func inherit(environ, unset []string) []string {
	if len(unset) == 0 {
		return environ
	}
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(unset, name) {
			out = append(out, kv)
		}
	}
	return out
}

// Process is a running workload.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	addr string
}

// Start starts the workload and waits until its port accepts connections.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("start workload: no command")
	}
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = append(inherit(os.Environ(), cfg.Unset), cfg.Env...)
	cmd.Env = append(cmd.Env,
		fmt.Sprintf("%s=%s", EnvHost, cfg.Host),
		fmt.Sprintf("%s=%d", EnvPort, cfg.Port),
		EnvWorkspace+"="+cfg.Dir,
		EnvUserID+"="+cfg.UserID,
	)
	cmd.Stdout, cmd.Stderr = cfg.Stdout, cfg.Stderr
	// Its own process group, so SIGTERM reaches whatever the workload spawned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start workload %s: %w", cfg.Command[0], err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{}), addr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))}
	go func() { p.err = cmd.Wait(); close(p.done) }()

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

// Done is closed when the workload has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the workload's exit error, valid after Done.
func (p *Process) Err() error { <-p.done; return p.err }

// Stop sends SIGTERM to the workload's process group and waits up to grace for it to
// flush and exit, then kills the group.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return p.err
}
