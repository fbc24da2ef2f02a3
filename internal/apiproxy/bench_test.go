package apiproxy_test

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/modelstub"
	"github.com/sandgate/sandgate/internal/apiproxy"
)

// BenchmarkProxy_ModelCall measures what the agent's proxy adds to a model call: the
// same streamed call (the stub's Messages API, several server-sent events) made
// through the proxy and directly to the same stub on loopback, alternately, each read
// to its end. The proxy's share is the key added, the answer metered (its usage) and
// scrubbed as it streams, the spend checked and recorded (a spend limit is set, with
// the in-memory ledger) and the log line.
//
//	go test -run '^$' -bench Proxy_ModelCall -benchtime 2000x ./internal/apiproxy/
func BenchmarkProxy_ModelCall(b *testing.B) {
	const key = "sk-bench-2c9a1f0e7d6b5a4938271605f4e3d2c1"
	stub := &modelstub.Server{Key: key}
	if err := stub.Start(""); err != nil {
		b.Fatal(err)
	}
	defer stub.Close()
	u, _ := url.Parse(stub.URL())
	p := &apiproxy.Proxy{Upstream: apiproxy.Upstream{Name: "model", URL: u, Header: "X-Api-Key", Key: key,
		Spend: 1 << 50, SpendWindow: time.Hour}}
	proxied := serveProxy(b, p)
	body := `{"model":"m","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"how long does a call through the proxy take"}]}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	call := func(base, k string) time.Duration {
		req, _ := http.NewRequest("POST", base+modelstub.PathMessages, strings.NewReader(body))
		req.Header.Set("X-Api-Key", k)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != 200 || n == 0 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
		return d
	}
	call(proxied, "placeholder") // connections warm on both paths
	call(stub.URL(), key)
	var via, direct []time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			via = append(via, call(proxied, "placeholder"))
			direct = append(direct, call(stub.URL(), key))
		} else {
			direct = append(direct, call(stub.URL(), key))
			via = append(via, call(proxied, "placeholder"))
		}
	}
	b.StopTimer()
	p50, d50 := median(via), median(direct)
	b.ReportMetric(msOf(p50), "proxy-p50-ms")
	b.ReportMetric(msOf(percentile(via, 0.99)), "proxy-p99-ms")
	b.ReportMetric(msOf(d50), "direct-p50-ms")
	b.ReportMetric(msOf(percentile(direct, 0.99)), "direct-p99-ms")
	b.ReportMetric(msOf(p50-d50), "added-p50-ms")
	b.ReportMetric(float64(p50)/float64(d50), "x-direct-p50")
}

func median(ds []time.Duration) time.Duration { return percentile(ds, 0.5) }

func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
