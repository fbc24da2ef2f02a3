// Package undeploy takes a deployed stack's sandboxes down before the stack is deleted:
// it refuses new starts, stops every sandbox task gracefully (each syncs its user's
// files on SIGTERM) and waits for them, so that `sam delete` loses nothing.
package undeploy
