// Package identity is the local stack's IAM and STS state: the roles template.yaml
// defines, the sessions issued for them (a function's execution role, a task's task
// role, an operator), and the SigV4 check every emulator runs to learn who calls.
// Authorisation — what a principal may do — is decided elsewhere, from the Principal
// this package resolves.
package identity
