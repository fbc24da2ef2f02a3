// Package taskenv names the environment a sandbox task receives from the control plane:
// the contract between the launcher (which sets it in RunTask overrides) and the agent
// (which reads it). One list, so the two can never drift apart.
package taskenv
