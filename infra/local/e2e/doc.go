// Package e2e holds the end-to-end tests of the whole application on the local stack:
// the real functions and agent, built as make build-local builds them, driven by real
// WebSocket clients (and a real browser); the agent run as a task and driven as the
// functions drive it; and the fault tests (TestChaos_*: DynamoDB stopped, S3 failing,
// RunTask failing, agents paused and killed, disconnects lost), which assert what the
// clients are told, the recovery, the capacity counter and that nothing saved is lost.
package e2e
