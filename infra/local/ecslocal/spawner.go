package ecslocal

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandgate/sandgate/infra/local/proc"
	"github.com/sandgate/sandgate/internal/logging"
)

// A spawner is the OS thread that forks isolated tasks' processes of one bounding
// set. A process gets its namespaces, cgroups and bounding set from the thread that
// forks it: the spawner joins the task's network namespace and cgroups for the fork and
// leaves them after, but a bounding set, once dropped, never comes back, so the thread
// forks for that bounding set only, for the life of this process.
//
// No such thread may ever end, nor any thread of this process that forked a child: the
// kernel sends a child its parent-death signal (proc.Start sets SIGKILL) when the thread
// that forked it ends, not the process. Go ends a thread only when a goroutine exits
// locked to it; none here does (onLockedThread parks a thread it cannot restore).

type spawnJob struct {
	sb  *sandbox
	cmd *exec.Cmd
	res chan spawned
}

type spawned struct {
	p   *proc.Process
	err error
}

type spawner struct {
	keep []string
	jobs chan spawnJob
}

var spawners struct {
	mu sync.Mutex
	m  map[string]*spawner // by bounding set
}

// spawnerFor returns the spawner of bounding set keep, starting it on first use.
func spawnerFor(keep []string) *spawner {
	key := strings.Join(keep, ",")
	spawners.mu.Lock()
	defer spawners.mu.Unlock()
	if sp := spawners.m[key]; sp != nil {
		return sp
	}
	if spawners.m == nil {
		spawners.m = map[string]*spawner{}
	}
	sp := &spawner{keep: keep, jobs: make(chan spawnJob)}
	spawners.m[key] = sp
	go sp.run()
	return sp
}

// spawn forks cmd for sb on the spawner's thread.
func (sp *spawner) spawn(sb *sandbox, cmd *exec.Cmd) (*proc.Process, error) {
	res := make(chan spawned, 1)
	sp.jobs <- spawnJob{sb: sb, cmd: cmd, res: res}
	r := <-res
	return r.p, r.err
}

func (sp *spawner) run() {
	runtime.LockOSThread() // for good: see above
	dropped := false
	for job := range sp.jobs {
		if !dropped {
			if err := dropBoundingSet(sp.keep); err != nil {
				job.res <- spawned{err: err}
				continue
			}
			dropped = true
		}
		p, err := sp.fork(job.sb, job.cmd)
		job.res <- spawned{p, err}
	}
}

// fork joins the task's network namespace and cgroups, forks cmd into a new PID
// namespace, and returns to this process's namespace and cgroups.
func (sp *spawner) fork(sb *sandbox, cmd *exec.Cmd) (*proc.Process, error) {
	host, err := hostNetns()
	if err != nil {
		return nil, err
	}
	if err := unix.Setns(sb.ns.fd, unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("join the task's network namespace: %w", err)
	}
	defer func() {
		if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
			// A spawner left in a task's namespace would fork the next task there.
			sb.log.Error("a spawner thread could not leave a task's network namespace; it forks no more", logging.Error, err.Error())
			select {}
		}
	}()
	if sb.cg != nil {
		if err := sb.cg.enterThread(); err != nil {
			return nil, err
		}
		defer func() {
			if err := sb.cg.leaveThread(); err != nil {
				sb.log.Warn("a thread of the stack stays in a task's cgroups", logging.Error, err.Error())
			}
		}()
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWPID
	return proc.Start(cmd)
}
