package agent

import (
	"fmt"
	"syscall"
)

// ProtectProcess makes this process non-dumpable, so the workload cannot read the
// agent's secrets. The workload runs with the agent's uid, and a process of the same
// uid may otherwise read /proc/<agent pid>/environ (the environment the agent was
// started with: SANDGATE_LEASE_TOKEN and the store's keys, which workload.Config.Unset
// keeps out of the workload's own environment but not out of this file) and
// /proc/<agent pid>/mem, or ptrace the agent. A non-dumpable process's /proc files
// belong to root, and ptrace_may_access refuses a caller without CAP_SYS_PTRACE (which
// a Fargate container lacks unless the task definition adds it). It also keeps the
// secrets out of core dumps.
//
// The flag lasts until the process execs: the workload, started with exec, is dumpable
// again, which is what it expects. Call ProtectProcess first thing, before any secret
// is read and long before the workload starts.
func ProtectProcess() error {
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", errno)
	}
	return nil
}
