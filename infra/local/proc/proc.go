package proc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started child process and its process group.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed

	stopOnce sync.Once
}

// Start starts cmd in a new process group that the kernel kills when this process
// dies (Pdeathsig), so a crashed test or a Ctrl-C leaves no orphans.
func Start(cmd *exec.Cmd) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error; valid after Done is closed.
func (p *Process) Err() error { <-p.done; return p.err }

// Signal sends sig to the whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d: %w", p.Pid(), err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, waits up to grace for the process to exit,
// then sends SIGKILL and waits for it. It returns the exit error, and is safe to call
// more than once and concurrently.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		_ = p.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
		}
		// Kill the group even when the leader exited, so its children go too.
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	})
	<-p.done
	return p.err
}

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
