// Package vend is the credential vendor: the function a sandbox task calls through an
// IAM-authenticated function URL to get credentials scoped to its one user, granted only
// to the task the user's sandbox record names, with the current lease; and the client
// the agent calls it with.
package vend
