// Package testkit is the one home of test support. For tests that call handlers in
// process: the real local emulators wired for one test (a table per test with its calls
// counted, ECS with a stand-in task, s3local, the API Gateway emulator with the real
// authorizer, stand-ins for an agent and for the connection functions). For end-to-end
// tests and benchmarks: the whole application on the local stack, built once per test
// binary as make build-local builds it, one stack per test or shared by a package, its
// processes' log lines read by their fields. And what both use: the WebSocket test
// client, a settable clock, a log buffer, recording proxies, the workloads a test
// binary can play, and the AWS call counter benchmarks report from.
package testkit
