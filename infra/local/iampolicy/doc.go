// Package iampolicy decides the local stack's authorisation questions as IAM would:
// an Evaluator that runs @cloud-copilot/iam-simulate in a child Node process (AGPL,
// never linked into anything deployed), the per-service derivation of the questions a
// request asks (action, resource ARN, condition keys), a check that refuses policies
// using what the stack cannot supply, and a Recorder of which statements were needed.
package iampolicy
