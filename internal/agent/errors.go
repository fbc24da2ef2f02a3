package agent

import "errors"

// Errors Run returns; each means the process should exit non-zero.
var (
	// ErrNotHolder: the task's lease token is not the user's current STARTING lease
	// (a duplicate or stale task); it exits without writing anything.
	ErrNotHolder = errors.New("this task does not hold the user's lease")
	// ErrLeaseLost: the lease was lost or given up while running; the agent stopped at
	// once, without a final sync or any other write.
	ErrLeaseLost = errors.New("lease lost")
	// ErrStart: restoring the user's files or starting the workload failed; the lease
	// was released so the next connection can start the sandbox afresh.
	ErrStart = errors.New("sandbox start failed")
	// ErrFinalSync: the final sync failed; the lease was released (STOPPED, with that
	// reason) rather than marked stopped as if everything were saved.
	ErrFinalSync = errors.New("final sync failed")
	// ErrWorkload: the workload kept crashing; the sandbox synced and stopped.
	ErrWorkload = errors.New("workload failed")
)
