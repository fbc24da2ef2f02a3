// Package wsroute holds what the WebSocket route functions share: the caller's identity
// from the authorizer context, API Gateway responses, and the error frames they send.
package wsroute
