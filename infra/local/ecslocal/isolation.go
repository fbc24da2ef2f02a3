package ecslocal

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Isolation: Fargate runs each task in a micro-VM of its own; the local stack runs them
// all as processes of one machine. With Server.Isolate, each task gets what keeps it
// apart from the others and from the machine, where this process may give it (root):
//
//   - its own network namespace (netns.go): nothing but a loopback interface, its
//     address on it, the metadata and credentials endpoints at 169.254.170.2:80 for this
//     task only, and the loopback endpoints its environment names forwarded in (the
//     emulators), from the task's own address; the task's port mapping forwarded out,
//     so the functions reach its agent at the task's address. No other task, no other
//     port of this machine is reachable from inside;
//   - its own PID namespace, whose PID 1 is the task's process: its exit ends
//     everything the task started, as a Fargate task's end does;
//   - the capability bounding set its definition leaves (Docker's defaults, less
//     DropCapabilities, plus AddCapabilities), and its definition's User;
//   - its own uid and gid for the code it runs as another user (WorkloadUIDVariable,
//     WorkloadGIDVariable: tasks share one kernel, so 10001 in two tasks would be one
//     user), which owns nothing else: the task's directory is root's and that group's
//     only (0710) under a task root nobody may list (0711);
//   - its own memory and pids cgroups (cgroup.go), limited to the task's memory.
//
// Whatever cannot be had here is said at Start in one warning and by NotIsolated.

// DefaultCapabilities are the capabilities a Fargate container starts with: Docker's
// default set. A definition's DropCapabilities remove from it, AddCapabilities add.
var DefaultCapabilities = []string{
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// FargateAddableCapabilities are the only capabilities Fargate lets a definition add.
var FargateAddableCapabilities = []string{"SYS_PTRACE"}

// capabilityNumbers are Linux's capabilities by the names ECS and Docker give them.
var capabilityNumbers = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "FSETID": unix.CAP_FSETID, "KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP, "LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK,
	"IPC_OWNER": unix.CAP_IPC_OWNER, "SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"SYS_CHROOT": unix.CAP_SYS_CHROOT, "SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_PACCT": unix.CAP_SYS_PACCT,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_BOOT": unix.CAP_SYS_BOOT, "SYS_NICE": unix.CAP_SYS_NICE,
	"SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "SYS_TIME": unix.CAP_SYS_TIME, "SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"MKNOD": unix.CAP_MKNOD, "LEASE": unix.CAP_LEASE, "AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "SETFCAP": unix.CAP_SETFCAP, "MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"MAC_ADMIN": unix.CAP_MAC_ADMIN, "SYSLOG": unix.CAP_SYSLOG, "WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "AUDIT_READ": unix.CAP_AUDIT_READ, "PERFMON": unix.CAP_PERFMON,
	"BPF": unix.CAP_BPF, "CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// validateCapabilities checks a definition's capability lists as ECS does for Fargate.
func validateCapabilities(add, drop []string) []error {
	var errs []error
	for _, c := range drop {
		if _, ok := capabilityNumbers[c]; !ok && c != "ALL" {
			errs = append(errs, fmt.Errorf("capability %q to drop is not a Linux capability", c))
		}
	}
	for _, c := range add {
		if !slices.Contains(FargateAddableCapabilities, c) {
			errs = append(errs, fmt.Errorf("capability %q cannot be added: Fargate adds only %s", c, strings.Join(FargateAddableCapabilities, ", ")))
		}
	}
	return errs
}

// boundingSet is the capabilities a container of the definition starts with.
func boundingSet(add, drop []string) []string {
	set := map[string]bool{}
	for _, c := range DefaultCapabilities {
		set[c] = true
	}
	for _, c := range add {
		set[c] = true
	}
	for _, c := range drop {
		if c == "ALL" {
			clear(set)
		}
		delete(set, c)
	}
	return slices.Sorted(maps.Keys(set))
}

// dropBoundingSet drops every capability but keep from the calling thread's bounding
// set, for good: what the thread execs can hold no other.
func dropBoundingSet(keep []string) error {
	kept := map[int]bool{}
	for _, c := range keep {
		kept[capabilityNumbers[c]] = true
	}
	last := unix.CAP_LAST_CAP
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if kept[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// Workload ids: each isolated task's are idBase + pid*idsPerProcess + a slot this
// process hands out, so no two tasks on the machine share them while both run, across
// the servers of one process and the processes of one machine (test binaries run in
// parallel), and none is a user the machine knows (systems give users ids far below).
const (
	idBase        = 1 << 30
	idsPerProcess = 512
)

var idSlots struct {
	mu   sync.Mutex
	used [idsPerProcess]bool
}

// takeWorkloadID reserves an id for a task's workload; false when this process runs
// idsPerProcess isolated tasks already.
func takeWorkloadID() (uint32, bool) {
	idSlots.mu.Lock()
	defer idSlots.mu.Unlock()
	for i, used := range idSlots.used {
		if !used {
			idSlots.used[i] = true
			return uint32(idBase + os.Getpid()*idsPerProcess + i), true
		}
	}
	return 0, false
}

// killUser kills every process running as uid, until none is left: nothing of a task's
// workload may outlive the task (its PID namespace sees to that where there is one) and
// meet the next task given the same id.
func killUser(uid uint32) {
	for range 100 {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if runsAs(pid, uid) {
				found = true
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if !found {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runsAs reports whether any of pid's uids (real, effective, saved, filesystem) is uid.
// /proc/<pid>/status says, whoever reads it; the directory's owner would not for a
// process that made itself non-dumpable.
func runsAs(pid int, uid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if ids, ok := strings.CutPrefix(line, "Uid:"); ok {
			return slices.Contains(strings.Fields(ids), strconv.FormatUint(uint64(uid), 10))
		}
	}
	return false
}

func releaseWorkloadID(id uint32) {
	slot := int(id) - idBase - os.Getpid()*idsPerProcess
	if slot < 0 || slot >= idsPerProcess {
		return
	}
	idSlots.mu.Lock()
	idSlots.used[slot] = false
	idSlots.mu.Unlock()
}

// isolation is what Start found this process can give each task.
type isolation struct {
	users      bool // per-task workload ids (root)
	namespaces bool // network and PID namespaces, the bounding set
	cgroups    cgroupParents
	missing    []string
}

// probeIsolation finds what of the isolation this process can give.
func probeIsolation() *isolation {
	iso := &isolation{}
	if os.Geteuid() != 0 {
		iso.missing = append(iso.missing, fmt.Sprintf(
			"this process runs as uid %d, not root: every task and its workload run as that uid (a workload can read and write every task's files and signal or ptrace every agent), "+
				"all tasks share the loopback network (a workload reaches every task's agent, DynamoDB Local's own port and every emulator), "+
				"the credentials endpoint is on that shared loopback (AWS_CONTAINER_CREDENTIALS_FULL_URI), no task has a PID namespace, a capability bounding set or a memory limit", os.Geteuid()))
		return iso
	}
	iso.users = true
	if ns, err := newNetns(); err != nil {
		iso.missing = append(iso.missing, fmt.Sprintf(
			"no network or PID namespaces (%v): all tasks share the loopback network (a workload reaches every task's agent, DynamoDB Local's own port and every emulator), "+
				"the credentials endpoint is on that shared loopback (AWS_CONTAINER_CREDENTIALS_FULL_URI), an agent's exit does not end what its task started, and agents keep this process's capabilities", err))
	} else {
		ns.close()
		iso.namespaces = true
	}
	if ps, err := ownCgroups(); err != nil {
		iso.missing = append(iso.missing, fmt.Sprintf(
			"no memory or pids cgroup per task (%v): a workload's memory is bounded by nothing but the machine, and the kernel's OOM killer may pick any process of it", err))
	} else {
		iso.cgroups = ps
	}
	return iso
}

// NotIsolated names what of the tasks' isolation this server could not give, and why;
// empty when every task is isolated (or Isolate is off, which isolates nothing on
// purpose). Valid after Start.
func (s *Server) NotIsolated() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.iso == nil {
		if s.Isolate {
			return []string{"not started"}
		}
		return []string{"Server.Isolate is off"}
	}
	return slices.Clone(s.iso.missing)
}
