// Package stacktest runs the whole application on the local stack for tests and
// benchmarks: the real functions and agent, built once per test binary as make
// build-local builds them, driven by real WebSocket clients.
package stacktest
