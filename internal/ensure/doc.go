// Package ensure ensures a user's sandbox: reuse a live one, or win the lease and
// launch its task, or report the start under way, the capacity refusal or the purge.
package ensure
