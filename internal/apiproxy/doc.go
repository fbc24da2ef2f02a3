// Package apiproxy is the agent's reverse proxy to an API the team declares (the model
// provider, say): the workload points its SDK's base URL at a loopback listener, and
// the proxy adds the team's credential header, forwards over TLS, and applies the
// user's rate and spend limits, so the workload never holds the key.
//
// A forward proxy could not add a header to an HTTPS request without intercepting TLS;
// a reverse proxy per upstream can, because the workload speaks plain HTTP to it.
package apiproxy
