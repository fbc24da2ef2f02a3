// Package metrics writes CloudWatch embedded metric format (EMF) lines: one JSON object
// per line on stdout, which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics.
package metrics
