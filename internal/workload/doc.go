// Package workload runs the program a sandbox hosts (SANDBOX_COMMAND, or the built-in
// demo) as a child process serving WebSocket on a loopback address the agent chooses.
package workload
