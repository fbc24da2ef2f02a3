// Package agentapi is the HTTP API between the Lambdas and a sandbox's agent: deliver a
// client's frame, close a client's connection, health. Server and client live together
// so the two ends share one definition of paths, headers and status codes.
package agentapi
