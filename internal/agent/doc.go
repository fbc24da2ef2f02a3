// Package agent is the sandbox's agent inside the user's Fargate task: it restores the
// user's files, runs the workload, serves the Lambdas' HTTP API, relays frames both
// ways, holds the lease, syncs on an interval and on stop, and stops when idle.
package agent
