package apiproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// Log keys of the proxy's one line per call. Never a header, a query or a body.
const (
	logUpstream = "upstream"
	logMethod   = "method"
	logPath     = "path"
	logStatus   = "status"
	logTokens   = "tokens"
	logBytes    = "bytes"
	logLimit    = "limit"
)

// HeaderLimit names, on a refusal of the proxy's own, the limit that refused: rate
// or spend. An answer without it came from the upstream.
const HeaderLimit = "X-Sandgate-Limit"

// The limits a call can meet.
const (
	LimitRate  = "rate"
	LimitSpend = "spend"
)

// Proxy forwards the workload's calls to one upstream with the team's credential.
type Proxy struct {
	Upstream Upstream
	// Transport sends the calls (nil: a clone of http.DefaultTransport). Tests set one
	// that trusts their TLS server.
	Transport http.RoundTripper
	// Ledger keeps the user's spend per window (nil: NewMemoryLedger, which forgets it
	// when the sandbox stops).
	Ledger Ledger
	// Busy, when set, is told +1 when a call starts and -1 when its answer is done: a
	// sandbox waiting on its model is not idle.
	Busy func(delta int)
	// Log gets one line per call (the upstream, method, path without query, status,
	// duration, tokens counted, bytes answered, the limit that refused).
	Log *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time

	once    sync.Once
	rp      *httputil.ReverseProxy
	limiter *rateLimiter
}

// Ledger records the tokens a user spent on an upstream per window. One agent serves
// one user, so a ledger is that user's.
type Ledger interface {
	// Spent returns the tokens recorded for upstream in the window starting at window.
	Spent(ctx context.Context, upstream string, window time.Time) (int64, error)
	// Add records n more tokens.
	Add(ctx context.Context, upstream string, window time.Time, n int64) error
}

// callKey carries a call's record from the handler to the response hooks.
type callKey struct{}

// call is one request's record for its log line and its accounting.
type call struct {
	status int
	tokens atomic.Int64
	bytes  atomic.Int64
}

func (p *Proxy) init() {
	p.once.Do(func() {
		if p.Log == nil {
			p.Log = slog.New(slog.DiscardHandler)
		}
		if p.Now == nil {
			p.Now = time.Now
		}
		if p.Ledger == nil {
			p.Ledger = NewMemoryLedger()
		}
		if p.Transport == nil {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.ResponseHeaderTimeout = 5 * time.Minute
			p.Transport = t
		}
		if p.Upstream.RatePerMinute > 0 {
			p.limiter = newRateLimiter(p.Upstream.RatePerMinute, p.Now)
		}
		p.Log = p.Log.With(logUpstream, p.Upstream.Name)
		u := p.Upstream
		p.rp = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				// SetURL replaces scheme, host and Host whatever the request named (an
				// absolute-form request line included): calls go to the upstream only.
				pr.SetURL(u.URL)
				h := pr.Out.Header
				h.Del("Proxy-Authorization")
				h.Del("Cookie")
				if u.Header == "Authorization" {
					h.Set(u.Header, "Bearer "+u.Key)
				} else {
					h.Set(u.Header, u.Key)
				}
				// The transport asks for gzip itself and decompresses, so the answer is
				// plain text to meter and to scrub.
				h.Del("Accept-Encoding")
			},
			Transport:      p.Transport,
			FlushInterval:  -1, // a streamed answer reaches the workload as it comes
			ModifyResponse: p.modifyResponse,
			ErrorHandler:   p.proxyError,
			ErrorLog:       slog.NewLogLogger(p.Log.Handler(), slog.LevelWarn),
		}
	})
}

// ServeHTTP forwards one call, unless a limit refuses it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	start := p.Now()
	path := r.URL.Path
	switch {
	case r.Method == http.MethodConnect:
		p.refuse(w, r, start, http.StatusMethodNotAllowed, "", "the proxy forwards to its upstream only; CONNECT is not served")
		return
	case r.Header.Get("Upgrade") != "":
		p.refuse(w, r, start, http.StatusNotImplemented, "", "protocol upgrades are not forwarded")
		return
	}
	if p.limiter != nil {
		if wait, ok := p.limiter.take(); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			p.refuse(w, r, start, http.StatusTooManyRequests, LimitRate,
				fmt.Sprintf("sandgate: the rate limit of %d calls a minute to %s is reached", p.Upstream.RatePerMinute, p.Upstream.Name))
			return
		}
	}
	if p.Upstream.Spend > 0 {
		window := p.window(start)
		spent, err := p.Ledger.Spent(r.Context(), p.Upstream.Name, window)
		if err != nil {
			// Unknown spend is not permission to spend.
			p.refuse(w, r, start, http.StatusServiceUnavailable, LimitSpend, "sandgate: the spend so far cannot be read; try again")
			p.Log.Warn("spend unknown; call refused", logging.Error, err.Error())
			return
		}
		if spent >= p.Upstream.Spend {
			next := window.Add(p.Upstream.SpendWindow)
			w.Header().Set("Retry-After", strconv.Itoa(int(next.Sub(start)/time.Second)+1))
			p.refuse(w, r, start, http.StatusTooManyRequests, LimitSpend,
				fmt.Sprintf("sandgate: the spend limit of %d tokens per %s on %s is reached", p.Upstream.Spend, p.Upstream.SpendWindow, p.Upstream.Name))
			return
		}
	}
	if p.Busy != nil {
		p.Busy(1)
		defer p.Busy(-1)
	}
	c := &call{}
	r = r.WithContext(context.WithValue(r.Context(), callKey{}, c))
	// The answer's body is copied, and closed (which accounts its tokens), before
	// ServeHTTP returns.
	p.rp.ServeHTTP(w, r)
	level := slog.LevelInfo
	if c.status >= 500 || c.status == 0 {
		level = slog.LevelWarn
	}
	p.Log.Log(r.Context(), level, "upstream call", logMethod, r.Method, logPath, path, logStatus, c.status,
		logging.Duration, p.Now().Sub(start).Milliseconds(), logTokens, c.tokens.Load(), logBytes, c.bytes.Load())
}

// window is the start of the spend window t falls in (windows are aligned to the
// Unix epoch: a day's is midnight UTC).
func (p *Proxy) window(t time.Time) time.Time { return t.Truncate(p.Upstream.SpendWindow).UTC() }

// refuse answers a call the proxy does not forward, in the shape model APIs use for
// their errors, and logs it.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, start time.Time, status int, limit, msg string) {
	if limit != "" {
		w.Header().Set(HeaderLimit, limit)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	kind := "invalid_request_error"
	if status == http.StatusTooManyRequests {
		kind = "rate_limit_error"
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]string{"type": kind, "message": msg}})
	p.Log.Info("upstream call refused", logMethod, r.Method, logPath, r.URL.Path, logStatus, status, logLimit, limit,
		logging.Duration, p.Now().Sub(start).Milliseconds())
}

// modifyResponse scrubs the key from the answer's headers and body (an upstream that
// echoes what it was sent must not hand the key to the workload) and meters the
// tokens its usage reports.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	c, _ := resp.Request.Context().Value(callKey{}).(*call)
	key := p.Upstream.Key
	for name, vs := range resp.Header {
		for i, v := range vs {
			if strings.Contains(v, key) {
				vs[i] = strings.ReplaceAll(v, key, Redacted)
			}
		}
		if strings.Contains(name, key) {
			delete(resp.Header, name)
		}
	}
	// The body's length may change with the scrub.
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	if c == nil {
		return errors.New("a call without its record")
	}
	c.status = resp.StatusCode
	m := newMeter(resp.Header.Get("Content-Type"))
	window := p.window(p.Now())
	resp.Body = &meteredBody{
		ReadCloser: newScrubber(resp.Body, key, m.write),
		c:          c,
		close: func() {
			// Trailers arrive with the body's end, before the proxy copies them.
			for _, vs := range resp.Trailer {
				for i, v := range vs {
					vs[i] = strings.ReplaceAll(v, key, Redacted)
				}
			}
			n := m.tokens()
			c.tokens.Store(n)
			if n > 0 && p.Upstream.Spend > 0 {
				// The context of the call may be gone (the workload hung up mid-stream):
				// what was answered is spent all the same.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := p.Ledger.Add(ctx, p.Upstream.Name, window, n); err != nil {
					p.Log.Warn("spend not recorded", logTokens, n, logging.Error, err.Error())
				}
			}
		},
	}
	return nil
}

// proxyError answers a call the upstream did not answer.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if c, _ := r.Context().Value(callKey{}).(*call); c != nil {
		c.status = http.StatusBadGateway
	}
	if errors.Is(err, context.Canceled) {
		// The workload hung up; nothing to answer.
		return
	}
	// The error may quote the upstream's URL, never the key; it goes to the log only.
	p.Log.Warn("upstream unreachable", logging.Error, err.Error())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadGateway)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]string{
		"type": "api_error", "message": "sandgate: the upstream " + p.Upstream.Name + " could not be reached"}})
}

// meteredBody counts the bytes answered and accounts the tokens once, at close.
type meteredBody struct {
	io.ReadCloser
	c     *call
	close func()
	once  sync.Once
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.bytes.Add(int64(n))
	return n, err
}

func (b *meteredBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.close)
	return err
}

// rateLimiter is a token bucket of perMinute calls a minute, bursts up to a minute's.
type rateLimiter struct {
	rate, burst float64 // per second; tokens
	now         func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(perMinute int, now func() time.Time) *rateLimiter {
	b := float64(perMinute)
	return &rateLimiter{rate: b / 60, burst: b, tokens: b, now: now, last: now()}
}

// take takes a token, or says how long until one is there.
func (l *rateLimiter) take() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(l.burst, l.tokens+d.Seconds()*l.rate)
		l.last = now
	}
	if l.tokens < 1 {
		return time.Duration((1 - l.tokens) / l.rate * float64(time.Second)), false
	}
	l.tokens--
	return 0, true
}

// MemoryLedger keeps spend in memory: a sandbox's own, forgotten when it stops.
type MemoryLedger struct {
	mu sync.Mutex
	m  map[string]int64
}

// NewMemoryLedger returns an empty ledger.
func NewMemoryLedger() *MemoryLedger { return &MemoryLedger{m: map[string]int64{}} }

func ledgerKey(upstream string, window time.Time) string {
	return upstream + "@" + strconv.FormatInt(window.Unix(), 10)
}

// Spent implements Ledger.
func (l *MemoryLedger) Spent(_ context.Context, upstream string, window time.Time) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[ledgerKey(upstream, window)], nil
}

// Add implements Ledger.
func (l *MemoryLedger) Add(_ context.Context, upstream string, window time.Time, n int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[ledgerKey(upstream, window)] += n
	return nil
}
