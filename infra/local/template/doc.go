// Package template reads a SAM template (template.yaml) into the model the local stack
// runs: parameters, functions with Globals merged, their events, and the WebSocket and HTTP APIs.
package template
