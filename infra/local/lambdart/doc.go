// Package lambdart is the local Lambda runtime: it runs the native bootstrap binaries as
// child processes behind the Lambda Runtime API, one process per concurrent invocation.
package lambdart
