// Package secretcache reads a Secrets Manager secret at run time and keeps it for a
// bounded time, so no secret sits in a function's environment and a rotation reaches
// every function without a redeploy.
package secretcache
