// Package httproute holds what the HTTP API's functions (Status, Prewarm) share: the
// signed user from the raw query string, the method check, JSON answers and the sandbox's Body.
package httproute
