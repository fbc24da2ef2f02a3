// Package preflight checks an AWS account before `sam deploy` of template.yaml, with
// read-only calls: each check says ok or names the problem and a one-line fix.
package preflight
