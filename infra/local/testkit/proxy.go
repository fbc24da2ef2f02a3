package testkit

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy stands between the processes given its URL (as AWS_ENDPOINT_URL_DYNAMODB or
// AWS_ENDPOINT_URL_S3) and an emulator: it records every request as it reaches the
// wire, SDK retries included, and can cut the network.
type Proxy struct {
	URL string

	target atomic.Pointer[url.URL]
	cut    atomic.Bool

	mu   sync.Mutex
	reqs []Request
}

// Request is one request a Proxy passed on.
type Request struct {
	At     time.Time
	Method string
	// Op is the DynamoDB operation (from X-Amz-Target), or the path of any other
	// request (S3's bucket and key).
	Op       string
	DynamoDB bool
}

// Write reports whether the request changes something: a DynamoDB write operation, or
// any other request but a GET or HEAD.
func (r Request) Write() bool {
	if r.DynamoDB {
		return slices.Contains(writeOps, r.Op)
	}
	return r.Method != http.MethodGet && r.Method != http.MethodHead
}

// NewProxy serves a Proxy to target until the test ends; an empty target answers 503
// until SetTarget (for an endpoint known only once the processes using the proxy run).
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p := &Proxy{}
	if target != "" {
		p.SetTarget(tb, target)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(p.target.Load())
			r.Out.Host = r.In.Host // SigV4 signed the host the client used
		},
		ErrorLog: log.New(io.Discard, "", 0), // a cut, or a killed task's request
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.cut.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "cut", http.StatusServiceUnavailable)
			return
		}
		if p.target.Load() == nil {
			http.Error(w, "no target yet", http.StatusServiceUnavailable)
			return
		}
		req := Request{At: time.Now(), Method: r.Method, Op: r.URL.Path}
		if t := r.Header.Get("X-Amz-Target"); t != "" {
			_, req.Op, _ = strings.Cut(t, ".")
			req.DynamoDB = true
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// SetTarget points the proxy at endpoint.
func (p *Proxy) SetTarget(tb testing.TB, endpoint string) {
	tb.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		tb.Fatal(err)
	}
	p.target.Store(u)
}

// Cut drops every connection without an answer while cut is true, as a network
// partition does.
func (p *Proxy) Cut(cut bool) { p.cut.Store(cut) }

// Requests returns the requests passed on since since.
func (p *Proxy) Requests(since time.Time) []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Request
	for _, r := range p.reqs {
		if !r.At.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// Writes returns the requests passed on since since that change something.
func (p *Proxy) Writes(since time.Time) []Request {
	var out []Request
	for _, r := range p.Requests(since) {
		if r.Write() {
			out = append(out, r)
		}
	}
	return out
}
