package agent

import (
	"fmt"
	"syscall"
)

// ProtectProcess makes this process non-dumpable: its /proc files (environ, which
// keeps the environment the agent was started with — SANDGATE_LEASE_TOKEN, the
// store's keys, the credentials URI — and mem, which holds the gateway token too)
// belong to root, ptrace_may_access refuses any caller without CAP_SYS_PTRACE (which
// a Fargate task definition must never add), and no core dump carries a secret.
//
// The workload runs under a uid of its own, so the kernel refuses it all of this
// anyway; ProtectProcess is the second line, and the only one where the workload
// shares the agent's uid (a local stack that does not run as root).
//
// The flag lasts until the process execs: the workload, started with exec, is
// dumpable again, which is what it expects. Call ProtectProcess first thing, before
// any secret is read and long before the workload starts.
func ProtectProcess() error {
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", errno)
	}
	return nil
}
