// Package e2e holds the end-to-end tests of the whole application on the local stack:
// the real functions and agent, built as make build-local builds them, driven by real
// WebSocket clients (and a real browser).
package e2e
