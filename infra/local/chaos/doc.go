// Package chaos holds the fault tests of the whole application on the local stack:
// DynamoDB stopped and restarted, S3 failing, RunTask failing, agents paused and
// killed, disconnects lost; each asserts what the clients are told, the recovery, the
// capacity counter and that nothing saved is lost.
package chaos
