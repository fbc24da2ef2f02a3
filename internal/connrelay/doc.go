// Package connrelay is the relay function, through which a sandbox reaches its user's
// WebSocket connections (post, get, delete) without holding execute-api:ManageConnections,
// whose ARN names only a connection and so cannot be scoped to a user: the function acts
// only on connections recorded under the calling task's user, for the task that user's
// record names. Also the agent's client of it, which batches what is asked at once.
package connrelay
