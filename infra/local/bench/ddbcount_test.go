package bench_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// ddbCounter is a proxy in front of the stack's DynamoDB endpoint that counts the
// requests of every process given its URL (AWS_ENDPOINT_URL_DYNAMODB), by operation
// (X-Amz-Target): AWS calls as they reach the wire, SDK retries included.
type ddbCounter struct {
	srv    *httptest.Server
	target atomic.Pointer[url.URL]
	mu     sync.Mutex
	ops    map[string]int64
}

// The DynamoDB operations that write.
var ddbWrites = []string{"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}

func newDDBCounter(tb testing.TB) *ddbCounter {
	c := &ddbCounter{ops: map[string]int64{}}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(c.target.Load())
		r.Out.Host = r.In.Host // SigV4 signed the host the client used
	}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.target.Load() == nil {
			http.Error(w, "no target yet", http.StatusServiceUnavailable)
			return
		}
		_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
		c.mu.Lock()
		c.ops[op]++
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(c.srv.Close)
	return c
}

func (c *ddbCounter) URL() string { return c.srv.URL }

// SetTarget points the proxy at endpoint.
func (c *ddbCounter) SetTarget(tb testing.TB, endpoint string) {
	u, err := url.Parse(endpoint)
	if err != nil {
		tb.Fatal(err)
	}
	c.target.Store(u)
}

// Take returns the requests counted since the last Take: all, and those that write.
func (c *ddbCounter) Take() (all, writes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for op, n := range c.ops {
		all += n
		for _, w := range ddbWrites {
			if op == w {
				writes += n
			}
		}
	}
	clear(c.ops)
	return all, writes
}
