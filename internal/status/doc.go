// Package status is the Status function's logic (GET /status on the HTTP API, verified
// from the same signed query string as the WebSocket URL): the caller's sandbox, read only.
package status
