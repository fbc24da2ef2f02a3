// Package cleanup is the scheduled Cleanup function's logic: reap sandboxes whose lease
// expired, stop orphan tasks, and purge the data of long-inactive users under their lock.
package cleanup
