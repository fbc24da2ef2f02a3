// Package template reads a SAM template (template.yaml): as written, with an evaluator of
// CloudFormation's intrinsic functions and conditions (Document), and as the model the
// local stack runs: parameters, functions with Globals merged, their events, and the
// WebSocket and HTTP APIs (Template).
package template
