// Package prewarm is the Prewarm function's logic (POST /prewarm on the HTTP API, verified
// from the same signed query string as the WebSocket URL): ensure the caller's sandbox.
package prewarm
