// Package message is the Message function's logic ($default): deliver a frame to the
// user's agent, or queue it while the sandbox starts or stops, and tell the sender why not.
package message
