package iampolicy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// Env is where the stack's requests are made: its partition, region and account.
type Env struct {
	// Partition is "aws" when empty.
	Partition string
	Region    string
	Account   string
}

func (e Env) partition() string {
	if e.Partition == "" {
		return "aws"
	}
	return e.Partition
}

// arn builds arn:<partition>:<service>:<region>:<account>:<resource>.
func (e Env) arn(service, region, account, resource string) string {
	return "arn:" + e.partition() + ":" + service + ":" + region + ":" + account + ":" + resource
}

// Call is one request as an emulator received it, before its service's logic ran.
type Call struct {
	Method string
	// URL carries the path (path-style for S3) and the query.
	URL    *url.URL
	Header http.Header
	Body   []byte
	// TLS reports a request received over TLS (aws:SecureTransport).
	TLS bool
}

// CallOf returns r as a Call; body is r's payload, already read.
func CallOf(r *http.Request, body []byte) Call {
	return Call{Method: r.Method, URL: r.URL, Header: r.Header, Body: body, TLS: r.TLS != nil}
}

// Global condition keys the derivations set.
const (
	keyRequestedRegion = "aws:RequestedRegion"
	keySecureTransport = "aws:SecureTransport"
	keyRequestTag      = "aws:RequestTag/"
	keyTagKeys         = "aws:TagKeys"
)

// ErrMalformed: the request cannot be understood well enough to say what it asks;
// the emulator answers it with its service's validation error.
var ErrMalformed = errors.New("malformed request")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// unsupported is a request the derivation does not know; it is refused, never
// passed through unauthorised.
func unsupported(action, resource, format string, args ...any) error {
	return &identity.UnsupportedError{Action: action, Resource: resource, Detail: fmt.Sprintf(format, args...)}
}

// global returns the global keys every request of env carries.
func (e Env) global(tls bool) map[string][]string {
	c := map[string][]string{keySecureTransport: {boolString(tls)}}
	if e.Region != "" {
		c[keyRequestedRegion] = []string{e.Region}
	}
	return c
}

// request is one identity.Request for action on resource with env's global keys and
// the extra context keys.
func (e Env) request(tls bool, action, resource string, extra map[string][]string) identity.Request {
	c := e.global(tls)
	for k, v := range extra {
		c[k] = v
	}
	return identity.Request{Action: action, Resource: resource, Context: c}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// AuthorizeAll asks a about every request for principal p, in order, and returns the
// first refusal: a call AWS authorises piece by piece (a transaction's items, a
// CopyObject's source and target) is refused as a whole when any piece is.
func AuthorizeAll(ctx context.Context, a identity.Authorizer, p *identity.Principal, reqs []identity.Request) error {
	for _, r := range reqs {
		r.Principal = p
		if err := a.Authorize(ctx, r); err != nil {
			return err
		}
	}
	return nil
}
