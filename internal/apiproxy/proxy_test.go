package apiproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/config"
)

const testKey = "sk-team-7f3a9c1e5b2d4f608a1c3e5f7091b2d4"

// upstreamSeen is what the fake upstream recorded of one call.
type upstreamSeen struct {
	host, path, query, auth, apiKey, cookie, acceptEncoding string
}

// tlsUpstream is an upstream served over TLS that records each call and answers with
// handler.
func tlsUpstream(t *testing.T, handler http.HandlerFunc) (*httptest.Server, func() []upstreamSeen) {
	t.Helper()
	var mu sync.Mutex
	var seen []upstreamSeen
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, upstreamSeen{host: r.Host, path: r.URL.Path, query: r.URL.RawQuery,
			auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("X-Api-Key"), cookie: r.Header.Get("Cookie"),
			acceptEncoding: r.Header.Get("Accept-Encoding")})
		mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []upstreamSeen {
		mu.Lock()
		defer mu.Unlock()
		return append([]upstreamSeen(nil), seen...)
	}
}

// serveProxy runs p on a loopback listener, as the agent does, and returns its URL.
func serveProxy(t testing.TB, p *apiproxy.Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func newProxy(t *testing.T, srv *httptest.Server, header string, mutate func(*apiproxy.Upstream)) (*apiproxy.Proxy, *bytes.Buffer) {
	t.Helper()
	u, _ := url.Parse(srv.URL + "/base")
	up := apiproxy.Upstream{Name: "model", URL: u, Header: header, Key: testKey, SpendWindow: time.Hour}
	if mutate != nil {
		mutate(&up)
	}
	logs := &syncBuffer{}
	p := &apiproxy.Proxy{Upstream: up, Transport: srv.Client().Transport,
		Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return p, &logs.Buffer
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// The workload calls the proxy with whatever key its SDK insists on; the upstream gets
// the team's key over TLS, at the base path, with the workload's own placeholder
// replaced and no cookie; an upstream that echoes the key back gets it scrubbed from
// the headers and body the workload reads; the log line names the call and holds
// neither key nor body.
func TestProxy_AddsTheKey_WorkloadNeverSeesIt(t *testing.T) {
	for _, header := range []string{"Authorization", "X-Api-Key"} {
		t.Run(header, func(t *testing.T) {
			srv, seen := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				// A careless upstream: it reflects the credential it was sent.
				cred := r.Header.Get(header)
				w.Header().Set("X-Echo", cred)
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"echo":%q,"note":"a confidential answer","usage":{"input_tokens":3,"output_tokens":4}}`, cred)
			})
			p, logs := newProxy(t, srv, header, nil)
			base := serveProxy(t, p)
			req, _ := http.NewRequest("POST", base+"/v1/messages?beta=true", strings.NewReader(`{"prompt":"a confidential question"}`))
			req.Header.Set(header, "placeholder-the-sdk-wants")
			req.Header.Set("Cookie", "session=abc")
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := seen()
			if len(got) != 1 {
				t.Fatalf("upstream saw %d calls", len(got))
			}
			want := testKey
			if header == "Authorization" {
				want = "Bearer " + testKey
			}
			if cred := map[string]string{"Authorization": got[0].auth, "X-Api-Key": got[0].apiKey}[header]; cred != want {
				t.Errorf("upstream's %s = %q, want the team's key", header, cred)
			}
			if got[0].path != "/base/v1/messages" || got[0].query != "beta=true" || got[0].cookie != "" {
				t.Errorf("upstream saw path %q query %q cookie %q", got[0].path, got[0].query, got[0].cookie)
			}
			everything := string(body) + fmt.Sprint(resp.Header)
			if strings.Contains(everything, testKey) {
				t.Errorf("the workload read the key: %s", everything)
			}
			if !strings.Contains(string(body), apiproxy.Redacted) || !strings.Contains(resp.Header.Get("X-Echo"), apiproxy.Redacted) {
				t.Errorf("the echo was not scrubbed: %s %q", body, resp.Header.Get("X-Echo"))
			}
			for _, secret := range []string{testKey, "confidential", "placeholder"} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds %q: %s", secret, logs)
				}
			}
			var line map[string]any
			if err := json.Unmarshal(bytes.TrimSpace(logs.Bytes()), &line); err != nil {
				t.Fatalf("log %q: %v", logs, err)
			}
			if line["msg"] != "upstream call" || line["upstream"] != "model" || line["path"] != "/v1/messages" ||
				line["status"] != 200.0 || line["tokens"] != 7.0 {
				t.Errorf("log line %v", line)
			}
		})
	}
}

// A key split across the reads of a body is scrubbed all the same.
func TestProxy_ScrubsAKeySplitAcrossReads(t *testing.T) {
	srv, _ := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		f := w.(http.Flusher)
		for _, part := range []string{"before " + testKey[:5], testKey[5:20], testKey[20:] + " after " + testKey[:3], "x"} {
			io.WriteString(w, part)
			f.Flush()
			time.Sleep(5 * time.Millisecond)
		}
	})
	p, _ := newProxy(t, srv, "X-Api-Key", nil)
	resp, err := http.Get(serveProxy(t, p) + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(iotest.OneByteReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	if want := "before " + apiproxy.Redacted + " after " + testKey[:3] + "x"; string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

// A streamed answer reaches the workload event by event, as the upstream sends it:
// the upstream sends the next event only after the workload has read the last.
func TestProxy_StreamsEventByEvent(t *testing.T) {
	const events = 5
	read := make(chan int)
	srv, _ := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := range events {
			fmt.Fprintf(w, "event: delta\ndata: {\"i\":%d}\n\n", i)
			f.Flush()
			select {
			case got := <-read:
				if got != i {
					return
				}
			case <-time.After(10 * time.Second):
				return // the proxy held the event back
			}
		}
	})
	p, _ := newProxy(t, srv, "Authorization", nil)
	resp, err := http.Get(serveProxy(t, p) + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		var ev struct{ I int }
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil || ev.I != next {
			t.Fatalf("event %q, want %d", line, next)
		}
		read <- ev.I
		next++
	}
	if next != events {
		t.Fatalf("%d events arrived, want %d", next, events)
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func call(t *testing.T, base string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Post(base+"/v1/messages", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// The user's calls are held to RatePerMinute; a refused call never reaches the
// upstream and says which limit refused it and when to try again.
func TestProxy_RateLimit(t *testing.T) {
	srv, seen := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p, _ := newProxy(t, srv, "Authorization", func(u *apiproxy.Upstream) { u.RatePerMinute = 2 })
	p.Now = clk.now
	base := serveProxy(t, p)
	for i := range 2 {
		if resp, body := call(t, base); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := call(t, base)
	if resp.StatusCode != 429 || resp.Header.Get(apiproxy.HeaderLimit) != apiproxy.LimitRate || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(body, "rate_limit_error") {
		t.Fatalf("third call: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if n := len(seen()); n != 2 {
		t.Fatalf("upstream saw %d calls, want 2", n)
	}
	clk.add(30 * time.Second) // one call's worth
	if resp, body := call(t, base); resp.StatusCode != 200 {
		t.Fatalf("after 30 s: %d %s", resp.StatusCode, body)
	}
	if resp, _ := call(t, base); resp.StatusCode != 429 {
		t.Fatalf("a second call after 30 s: %d", resp.StatusCode)
	}
}

// Spend counts the tokens a streamed answer reports (each count's largest value, as
// Anthropic's stream repeats a growing output count); once the window's budget is
// spent, calls are refused until the next window.
func TestProxy_SpendLimit(t *testing.T) {
	srv, seen := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n")
		io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n")
	})
	clk := &clock{t: time.Unix(1_700_000_000, 0).Truncate(time.Hour).Add(time.Minute)}
	ledger := apiproxy.NewMemoryLedger()
	p, logs := newProxy(t, srv, "X-Api-Key", func(u *apiproxy.Upstream) { u.Spend = 50 })
	p.Now, p.Ledger = clk.now, ledger
	base := serveProxy(t, p)
	for i := range 2 {
		if resp, body := call(t, base); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if spent, _ := ledger.Spent(context.Background(), "model", clk.now().Truncate(time.Hour)); spent != 60 {
		t.Fatalf("spent %d, want 2 × 30", spent)
	}
	resp, body := call(t, base)
	if resp.StatusCode != 429 || resp.Header.Get(apiproxy.HeaderLimit) != apiproxy.LimitSpend {
		t.Fatalf("over budget: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if n := len(seen()); n != 2 {
		t.Fatalf("upstream saw %d calls, want 2", n)
	}
	if !strings.Contains(logs.String(), `"limit":"spend"`) {
		t.Errorf("the refusal is not logged: %s", logs)
	}
	clk.add(time.Hour)
	if resp, body := call(t, base); resp.StatusCode != 200 {
		t.Fatalf("next window: %d %s", resp.StatusCode, body)
	}
}

// Whatever the request line or Host header names, the call goes to the upstream.
func TestProxy_AlwaysTheUpstream(t *testing.T) {
	srv, seen := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p, _ := newProxy(t, srv, "Authorization", nil)
	base := serveProxy(t, p)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://attacker.example/steal HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u, _ := url.Parse(srv.URL)
	if got := seen(); len(got) != 1 || got[0].host != u.Host || got[0].path != "/base/steal" {
		t.Fatalf("upstream saw %+v, want host %s", got, u.Host)
	}
	for _, tc := range []struct {
		method string
		header http.Header
		want   int
	}{
		{"CONNECT", nil, http.StatusMethodNotAllowed},
		{"GET", http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, http.StatusNotImplemented},
	} {
		req, _ := http.NewRequest(tc.method, base+"/", nil)
		if tc.method == "CONNECT" {
			req.URL.Opaque = "attacker.example:443"
		}
		for k, v := range tc.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %v: %d, want %d", tc.method, tc.header, resp.StatusCode, tc.want)
		}
	}
	if n := len(seen()); n != 1 {
		t.Errorf("upstream saw %d calls", n)
	}
}

// A call in flight is reported busy until its streamed answer is done; an upstream
// that cannot be reached is a 502 of the proxy's own.
func TestProxy_BusyAndUnreachable(t *testing.T) {
	release := make(chan struct{})
	srv, _ := tlsUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		<-release
	})
	p, _ := newProxy(t, srv, "Authorization", nil)
	var busy atomic.Int64
	p.Busy = func(d int) { busy.Add(int64(d)) }
	base := serveProxy(t, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(base + "/")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for busy.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if busy.Load() != 1 {
		t.Fatal("a call in flight is not busy")
	}
	close(release)
	<-done
	if busy.Load() != 0 {
		t.Fatalf("busy %d after the call", busy.Load())
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "https://" + ln.Addr().String()
	ln.Close()
	u, _ := url.Parse(dead)
	p2 := &apiproxy.Proxy{Upstream: apiproxy.Upstream{Name: "gone", URL: u, Header: "Authorization", Key: testKey, SpendWindow: time.Hour}}
	resp, body := call(t, serveProxy(t, p2))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not be reached") || strings.Contains(body, testKey) {
		t.Fatalf("unreachable upstream: %d %s", resp.StatusCode, body)
	}
}

func TestLoadUpstreams(t *testing.T) {
	env := config.New(config.Map(map[string]string{
		"UPSTREAMS":                    "model, search",
		"UPSTREAM_MODEL_URL":           "https://api.anthropic.com/",
		"UPSTREAM_MODEL_KEY":           testKey,
		"UPSTREAM_MODEL_HEADER":        "x-api-key",
		"UPSTREAM_MODEL_RATE":          "60",
		"UPSTREAM_MODEL_SPEND":         "1000000",
		"UPSTREAM_MODEL_SPEND_WINDOW":  "1h",
		"UPSTREAM_SEARCH_URL":          "http://127.0.0.1:9000/v1",
		"UPSTREAM_SEARCH_KEY":          "k2",
		"UPSTREAM_SEARCH_SPEND_WINDOW": "",
	}))
	ups := apiproxy.LoadUpstreams(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 {
		t.Fatalf("%d upstreams", len(ups))
	}
	m, s := ups[0], ups[1]
	if m.Name != "model" || m.URL.String() != "https://api.anthropic.com" || m.Header != "X-Api-Key" || m.Key != testKey ||
		m.RatePerMinute != 60 || m.Spend != 1000000 || m.SpendWindow != time.Hour {
		t.Errorf("model: %+v", m)
	}
	if s.Name != "search" || s.URL.String() != "http://127.0.0.1:9000/v1" || s.Header != "Authorization" ||
		s.RatePerMinute != 0 || s.Spend != 0 || s.SpendWindow != apiproxy.DefaultSpendWindow {
		t.Errorf("search: %+v", s)
	}
	if apiproxy.WorkloadVar("model") != "SANDGATE_UPSTREAM_MODEL_URL" || !apiproxy.IsKeyVar("UPSTREAM_MODEL_KEY") ||
		apiproxy.IsKeyVar("UPSTREAM_MODEL_URL") || apiproxy.IsKeyVar("UPSTREAM__KEY") {
		t.Error("variable names")
	}
}

func TestLoadUpstreams_Refused(t *testing.T) {
	for name, tc := range map[string]struct {
		vars map[string]string
		want string
	}{
		"a bad name":              {map[string]string{"UPSTREAMS": "Model"}, "not an upstream name"},
		"a name twice":            {map[string]string{"UPSTREAMS": "m,m", "UPSTREAM_M_URL": "https://x", "UPSTREAM_M_KEY": "k"}, "listed twice"},
		"no key":                  {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_URL": "https://x"}, "UPSTREAM_M_KEY: required"},
		"no URL":                  {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_KEY": "k"}, "UPSTREAM_M_URL: required"},
		"http over a network":     {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_URL": "http://api.example.com", "UPSTREAM_M_KEY": "k"}, "http only to a loopback"},
		"a query in the URL":      {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_URL": "https://x/?key=1", "UPSTREAM_M_KEY": "k"}, "no user, query"},
		"the Host header":         {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_URL": "https://x", "UPSTREAM_M_KEY": "k", "UPSTREAM_M_HEADER": "host"}, "not a header the proxy may set"},
		"a window under a minute": {map[string]string{"UPSTREAMS": "m", "UPSTREAM_M_URL": "https://x", "UPSTREAM_M_KEY": "k", "UPSTREAM_M_SPEND_WINDOW": "30s"}, "under a minute"},
		"too many":                {map[string]string{"UPSTREAMS": "a,b,c,d,e,f,g,h,i"}, "at most 8"},
	} {
		t.Run(name, func(t *testing.T) {
			env := config.New(config.Map(tc.vars))
			apiproxy.LoadUpstreams(env)
			err := env.Err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatal("the error quotes the key")
			}
		})
	}
}
