package agent

// DefaultCapabilities are the capabilities a Fargate container starts with: Docker's
// default set. A task definition can only drop from them (the one Fargate lets it add,
// SYS_PTRACE, no sandgate task definition may add), so "drop all, then add back" is
// impossible: the task definition drops, by name, each one the agent does not need.
var DefaultCapabilities = []string{
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// Capabilities are the ones of DefaultCapabilities the agent keeps (the container runs
// as root only so that it can start the workload under another uid):
//
//   - CHOWN: hand the restored workspace to the workload's uid and gid, and take
//     DATA_DIR's directories back as the agent's whoever had them.
//   - DAC_OVERRIDE: read the workload's files to sync them, whatever their modes
//     (DAC_READ_SEARCH would do, but it is not among Docker's defaults).
//   - KILL: signal the workload's process group, and the orphans it leaves, which run
//     under its uid.
//   - SETGID, SETUID: start the workload under its own gid and uid, without
//     supplementary groups.
//
// Not FOWNER: the agent changes modes only of what it owns (it chowns a directory to
// itself before its chmod). Not SETPCAP, SETFCAP, MKNOD, SYS_CHROOT, FSETID,
// NET_BIND_SERVICE (the agent's port is 8080), NET_RAW or AUDIT_WRITE: nothing uses
// them. The workload holds no capability at all, whatever this list says: a non-root
// uid's exec clears them, and no_new_privs keeps them from coming back.
var Capabilities = []string{"CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID"}
