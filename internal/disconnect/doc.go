// Package disconnect is the Disconnect function's logic ($disconnect): forget the
// connection and tell the user's agent, best effort.
package disconnect
