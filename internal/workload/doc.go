// Package workload runs the program a sandbox hosts (SANDBOX_COMMAND, or the built-in
// demo) as a child process serving WebSocket on a loopback address the agent chooses:
// under its own uid and gid, in its own process group, with no_new_privs, its own
// resource limits, the first place in the OOM killer's queue and an environment built
// from an allowlist. The Reaper collects orphans when the agent is the container's init.
//
// Start runs the program through a launcher stage: this same binary, re-executed as
// /proc/self/exe under the workload's credentials, which applies the limits and then
// execs the program. Every binary that calls Start must call RunLauncher first thing in
// main (and in TestMain).
package workload
