// Package demoworkload is the built-in workload a sandbox runs when SANDBOX_COMMAND is unset:
// a small WebSocket server that keeps notes as files in the user's workspace (so
// persistence and isolation can be seen) and echoes every other frame.
package demoworkload
