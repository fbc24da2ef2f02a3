// Package apigw emulates API Gateway for the local stack: the WebSocket API (authorizer,
// routes, limits), its @connections management API, and the HTTP API, over Lambda invokes.
package apigw
