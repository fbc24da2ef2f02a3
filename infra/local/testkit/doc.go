// Package testkit is the one home of test support: the real local emulators wired for
// tests that call handlers in process (a table per test with its calls counted, ECS
// with a stand-in task, the API Gateway emulator, a stand-in agent), a settable clock,
// and the call counter benchmarks report from.
package testkit
