// Package functions holds the end-to-end tests of the Lambda functions under
// functions/<name>: each runs as its real bootstrap on the local stack built from
// template.yaml, with the real agent as the sandbox task.
package functions
