// Package notice is the wire contract of the notices the Connect function receives
// (from itself and from the Message function), their sender, and the client that asks
// the Connect function to ensure a sandbox and reads its answer.
package notice
