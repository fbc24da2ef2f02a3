// Package status is the logic of the Status and Prewarm functions (HTTP API, same signed
// query string as the WebSocket URL): read the caller's sandbox state, or ensure it.
package status
