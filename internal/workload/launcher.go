package workload

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Defaults of the workload's limits.
const (
	// DefaultMaxProcs is RLIMIT_NPROC: processes and threads of the workload's uid, so
	// a fork bomb stops there (the agent, root, is not counted against it).
	DefaultMaxProcs = 512
	// DefaultMaxFiles is RLIMIT_NOFILE: open files per process.
	DefaultMaxFiles = 4096
	// DefaultNice is the workload's nice value: a busy workload leaves the agent
	// (nice 0) most of the CPU it asks for.
	DefaultNice = 10
	// OOMScoreAdj puts the workload first in the OOM killer's queue, so memory
	// pressure kills it before the agent, which then syncs and stops cleanly.
	OOMScoreAdj = 1000
)

// Limits are what the launcher applies to the workload before its program runs.
type Limits struct {
	// Procs is RLIMIT_NPROC (DefaultMaxProcs when 0).
	Procs uint64
	// Files is RLIMIT_NOFILE (DefaultMaxFiles when 0), at most the inherited hard limit.
	Files uint64
	// AddressSpace is RLIMIT_AS in bytes; 0 leaves it as inherited. Runtimes that
	// reserve large virtual ranges (V8, the JVM) need a generous value.
	AddressSpace uint64
	// Nice is the workload's nice value, 0 to 19: higher yields more CPU to the agent.
	Nice int
}

// DefaultLimits are the limits a workload gets unless configured otherwise.
var DefaultLimits = Limits{Procs: DefaultMaxProcs, Files: DefaultMaxFiles, Nice: DefaultNice}

func (l Limits) orDefaults() Limits {
	if l.Procs == 0 {
		l.Procs = DefaultMaxProcs
	}
	if l.Files == 0 {
		l.Files = DefaultMaxFiles
	}
	return l
}

// String is the launcher's argument: procs=…,files=…,as=…,nice=….
func (l Limits) String() string {
	l = l.orDefaults()
	return fmt.Sprintf("procs=%d,files=%d,as=%d,nice=%d", l.Procs, l.Files, l.AddressSpace, l.Nice)
}

// ParseLimits reads what Limits.String writes.
func ParseLimits(s string) (Limits, error) {
	var l Limits
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || seen[k] {
			return Limits{}, fmt.Errorf("limits %q: bad %q", s, kv)
		}
		seen[k] = true
		switch k {
		case "procs":
			l.Procs = n
		case "files":
			l.Files = n
		case "as":
			l.AddressSpace = n
		case "nice":
			if n > 19 {
				return Limits{}, fmt.Errorf("limits %q: nice %d is outside [0, 19]", s, n)
			}
			l.Nice = int(n)
		default:
			return Limits{}, fmt.Errorf("limits %q: unknown %q", s, k)
		}
	}
	if len(seen) != 4 {
		return Limits{}, fmt.Errorf("limits %q: want procs, files, as and nice", s)
	}
	return l, nil
}

// The launcher's command line: argv[0] names it in ps; the flag, which no other mode
// of a binary accepts, selects it.
const (
	launcherName = "sandgate-launcher"
	launcherFlag = "-sandgate-launch"
)

func launcherArgs(l Limits, command []string) []string {
	return append([]string{launcherName, launcherFlag, l.String(), "--"}, command...)
}

// Exit statuses of a launcher that could not run the program, as a shell's.
const (
	exitCannotRun = 126
	exitNotFound  = 127
)

// RunLauncher runs the launcher stage and never returns when this process was started
// as one (by Start); otherwise it returns at once. Call it first thing in main, and
// in TestMain of a test binary whose tests start workloads.
//
// The launcher already runs under the workload's uid and gid, in its process group,
// with the environment the workload gets (Start arranged all three). On the thread
// that will exec it sets no_new_privs (no setuid binary or file capability can raise
// the workload's privileges, ever) and the nice value, both of which belong to a
// thread; then, for the process, oom_score_adj and the resource limits,
// RLIMIT_NPROC last (nothing of the launcher forks after it); then it execs the
// program. The workload's code never runs without them.
func RunLauncher() {
	if len(os.Args) < 5 || os.Args[1] != launcherFlag || os.Args[3] != "--" {
		return
	}
	os.Exit(launch(os.Args[2], os.Args[4:]))
}

func launch(spec string, command []string) int {
	runtime.LockOSThread() // never unlocked: this thread execs, or the process exits
	fail := func(code int, err error) int {
		fmt.Fprintf(os.Stderr, "%s: %v\n", launcherName, err)
		return code
	}
	l, err := ParseLimits(spec)
	if err != nil {
		return fail(exitCannotRun, err)
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return fail(code, err)
	}
	if err := l.apply(); err != nil {
		return fail(exitCannotRun, err)
	}
	err = syscall.Exec(path, command, os.Environ())
	return fail(exitCannotRun, fmt.Errorf("exec %s: %w", path, err))
}

// apply sets the limits on the calling thread and process; see RunLauncher.
func (l Limits) apply() error {
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	// PRIO_PROCESS with who 0 is the calling thread on Linux: the one that execs.
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, l.Nice); err != nil {
		return fmt.Errorf("setpriority %d: %w", l.Nice, err)
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(OOMScoreAdj)), 0); err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	if err := setLimit(syscall.RLIMIT_NOFILE, l.Files); err != nil {
		return err
	}
	if l.AddressSpace > 0 {
		if err := setLimit(syscall.RLIMIT_AS, l.AddressSpace); err != nil {
			return err
		}
	}
	return setLimit(rlimitNproc, l.Procs)
}

// setLimit sets both the soft and the hard limit to n, or to the inherited hard limit
// when that is lower (raising it would need a capability the workload lacks).
func setLimit(resource int, n uint64) error {
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(resource, &cur); err != nil {
		return fmt.Errorf("getrlimit %d: %w", resource, err)
	}
	n = min(n, cur.Max)
	if err := syscall.Setrlimit(resource, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		return fmt.Errorf("setrlimit %d to %d: %w", resource, n, err)
	}
	return nil
}

// Linux constants the syscall package lacks.
const (
	prSetNoNewPrivs     = 38         // PR_SET_NO_NEW_PRIVS
	prSetChildSubreaper = 36         // PR_SET_CHILD_SUBREAPER
	rlimitNproc         = 6          // RLIMIT_NPROC
	waitAll             = 0x40000000 // __WALL: children of any exit signal
)
