// Package proc runs the local stack's child processes (DynamoDB Local, Lambda
// bootstraps, sandbox agents) so that none outlives its parent: each runs in its own
// process group, dies with the parent on Linux, and stops with SIGTERM then SIGKILL.
package proc
