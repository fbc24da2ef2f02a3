// Package authorizer is the WebSocket $connect REQUEST authorizer: it verifies the
// signed query string and hands the verified userId to every route in its context.
package authorizer
