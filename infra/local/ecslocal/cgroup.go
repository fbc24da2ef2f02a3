package ecslocal

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A task's cgroups (v1 memory and pids controllers), as Fargate bounds a task by its
// memory: the kernel's OOM killer acts inside the task's memory limit, and picks the
// workload (oom_score_adj 1000) before its agent. Each is a child of this process's own
// cgroup in that hierarchy, named sandgate-<pid of this process>-<task uid>, so a run
// that crashed is told from one that runs: a later start removes the cgroups of
// processes that are gone.

// cgroupRoot is where the cgroup v1 hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupControllers are the hierarchies a task gets a cgroup in.
var cgroupControllers = []string{"memory", "pids"}

// DefaultTaskPids is a task's pids.max: every thread of the agent and the workload
// together. RLIMIT_NPROC bounds the workload's uid far below it; this bounds the task
// should a definition raise that limit.
const DefaultTaskPids = 4096

// cgroupPrefix starts every task cgroup's name.
const cgroupPrefix = "sandgate-"

var probes atomic.Int64

// cgroupParents maps each controller to this process's own cgroup directory in it.
type cgroupParents map[string]string

// ownCgroups finds this process's cgroup in each controller's v1 hierarchy, and checks
// that a child can be made there.
func ownCgroups() (cgroupParents, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	own := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	parents := cgroupParents{}
	for _, c := range cgroupControllers {
		path, ok := own[c]
		if !ok {
			return nil, fmt.Errorf("no cgroup v1 %s controller (cgroup v2 alone is not supported)", c)
		}
		dir := filepath.Join(cgroupRoot, c, path)
		probe := filepath.Join(dir, fmt.Sprintf("%sprobe-%d-%d", cgroupPrefix, os.Getpid(), probes.Add(1)))
		if err := os.Mkdir(probe, 0o755); err != nil {
			return nil, fmt.Errorf("make a %s cgroup: %w", c, err)
		}
		if err := os.Remove(probe); err != nil {
			return nil, fmt.Errorf("remove a %s cgroup: %w", c, err)
		}
		parents[c] = dir
	}
	return parents, nil
}

// sweep removes the task cgroups of processes that no longer run.
func (ps cgroupParents) sweep() []string {
	var removed []string
	for _, dir := range ps {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
			if !ok || !e.IsDir() {
				continue
			}
			owner, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(owner)
			if err != nil || pid == os.Getpid() || processExists(pid) {
				continue
			}
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed = append(removed, filepath.Join(dir, e.Name()))
			}
		}
	}
	return removed
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// taskCgroup is one task's cgroup in each controller.
type taskCgroup struct {
	parents cgroupParents
	dirs    map[string]string
}

// newTaskCgroup makes the task's cgroups, limited to memoryMiB and pids tasks.
func (ps cgroupParents) newTaskCgroup(name string, memoryMiB, pids int) (*taskCgroup, error) {
	cg := &taskCgroup{parents: ps, dirs: map[string]string{}}
	for c, parent := range ps {
		dir := filepath.Join(parent, cgroupPrefix+strconv.Itoa(os.Getpid())+"-"+name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.remove()
			return nil, fmt.Errorf("make the task's %s cgroup: %w", c, err)
		}
		cg.dirs[c] = dir
	}
	limit := strconv.FormatInt(int64(memoryMiB)<<20, 10)
	if err := writeCgroup(cg.dirs["memory"], "memory.limit_in_bytes", limit); err != nil {
		cg.remove()
		return nil, err
	}
	// Swap counts too, where the kernel accounts it: a workload must not swap its way
	// past the limit.
	_ = writeCgroup(cg.dirs["memory"], "memory.memsw.limit_in_bytes", limit)
	if err := writeCgroup(cg.dirs["pids"], "pids.max", strconv.Itoa(pids)); err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("set %s: %w", file, err)
	}
	return nil
}

// enterThread moves the calling thread (only it) into the task's cgroups, so that
// what it forks starts there; leaveThread takes it back to this process's.
func (cg *taskCgroup) enterThread() error {
	tid := strconv.Itoa(unix.Gettid())
	for _, dir := range cg.dirs {
		if err := writeCgroup(dir, "tasks", tid); err != nil {
			return err
		}
	}
	return nil
}

func (cg *taskCgroup) leaveThread() error {
	tid := strconv.Itoa(unix.Gettid())
	var errs []error
	for c := range cg.dirs {
		errs = append(errs, writeCgroup(cg.parents[c], "tasks", tid))
	}
	return errors.Join(errs...)
}

// remove removes the task's cgroups. The task's processes are gone by then (its PID
// namespace went with its agent), but the kernel lets go of a cgroup a moment after
// its last task has been reaped: a busy cgroup is retried for a while.
func (cg *taskCgroup) remove() error {
	var errs []error
	for c, dir := range cg.dirs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				delete(cg.dirs, c)
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove the task's %s cgroup: %w", c, err))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// oomKills is how many times the kernel's OOM killer acted in the task's memory cgroup.
func (cg *taskCgroup) oomKills() int {
	b, err := os.ReadFile(filepath.Join(cg.dirs["memory"], "memory.oom_control"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
