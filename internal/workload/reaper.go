package workload

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Reaper makes this process a child subreaper (an init for its descendants: on
// Fargate the agent is PID 1 already, locally it is not) and is then the only waiter
// of the process: on every SIGCHLD it collects each exited child. A child started
// through it (Start with Config.Reaper) has its status delivered to its Process; any
// other child is an orphan the workload left behind, reparented here, and is reaped
// and reported to the orphan callback. Because the start of a child and its
// registration happen under the lock the reaping takes, no status can be collected
// for a child before it is known: there is one waiter and no race between two.
//
// A process with a Reaper must start every child through it: os/exec's Wait would
// find its child already reaped.
type Reaper struct {
	orphan func(pid int, status syscall.WaitStatus)

	mu      sync.Mutex
	watched map[int]chan syscall.WaitStatus

	sigs       chan os.Signal
	stop, done chan struct{}
}

// StartReaper makes this process a child subreaper and starts reaping. orphan, when
// not nil, is called for each orphan reaped; it must return quickly and must not call
// the Reaper.
func StartReaper(orphan func(pid int, status syscall.WaitStatus)) (*Reaper, error) {
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0, 0, 0, 0); e != 0 {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", e)
	}
	r := &Reaper{
		orphan: orphan, watched: map[int]chan syscall.WaitStatus{},
		sigs: make(chan os.Signal, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.loop()
	return r, nil
}

// Close stops reaping. The process stays a subreaper.
func (r *Reaper) Close() {
	signal.Stop(r.sigs)
	close(r.stop)
	<-r.done
}

func (r *Reaper) loop() {
	defer close(r.done)
	for {
		// A signal that arrives while reap runs waits in the channel: none is lost,
		// and reap takes every exited child, however many signals were merged.
		r.reap()
		select {
		case <-r.sigs:
		case <-r.stop:
			return
		}
	}
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|waitAll, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none has exited
			return
		}
		if ch, ok := r.watched[pid]; ok {
			delete(r.watched, pid)
			ch <- ws // buffered
			continue
		}
		if r.orphan != nil {
			r.orphan(pid, ws)
		}
	}
}

// start runs fn, which starts one child, and registers the child before any reaping
// can see it.
func (r *Reaper) start(fn func() (*os.Process, error)) (*os.Process, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := fn()
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.watched[p.Pid] = ch
	return p, ch, nil
}

// KillOrphans kills, with SIGKILL, every child of this process that was not started
// through the Reaper — the orphans the workload left behind, and theirs as they in
// turn are reparented here — and waits up to timeout until they are reaped. It
// returns how many it killed and whether none is left. Call it once the workload has
// stopped: on the local stack, where the agent is not PID 1, nothing else would end
// them.
func (r *Reaper) KillOrphans(timeout time.Duration) (killed int, clean bool) {
	deadline := time.Now().Add(timeout)
	for {
		pids := r.killOrphans()
		killed += len(pids)
		if len(pids) == 0 {
			return killed, true
		}
		// Wait for the reaper to collect them; their own children appear here then.
		for delay := time.Millisecond; r.anyChild(pids); delay = min(2*delay, 50*time.Millisecond) {
			if time.Now().After(deadline) {
				return killed, false
			}
			time.Sleep(delay)
		}
	}
}

// killOrphans signals the unregistered children listed now. Under the lock no child
// is reaped, so no listed pid can have been reused.
func (r *Reaper) killOrphans() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var killed []int
	for _, pid := range children() {
		if _, ok := r.watched[pid]; ok {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	return killed
}

func (r *Reaper) anyChild(pids []int) bool {
	now := children()
	for _, pid := range pids {
		for _, c := range now {
			if c == pid {
				return true
			}
		}
	}
	return false
}

// children lists this process's children, zombies included, from
// /proc/self/task/*/children (an orphan is reparented to one of its threads).
func children() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
