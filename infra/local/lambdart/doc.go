// Package lambdart is the local Lambda runtime: it runs the native bootstrap binaries as
// child processes behind the Lambda Runtime API, one process per concurrent invocation,
// each as its function's execution role, and serves the Invoke API and function URLs.
package lambdart
