// Package relay posts frames to a user's WebSocket connections through the API Gateway
// management API: throttling retried with backoff, a gone connection forgotten.
package relay
