// Package notice is the wire contract of the notices the Connect function receives as
// asynchronous invocations (from itself and from the Message function), and their sender.
package notice
