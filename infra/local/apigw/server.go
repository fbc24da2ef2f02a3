package apigw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// API Gateway's limits, enforced the way it enforces them.
const (
	// DefaultMaxFrameBytes: a larger frame closes the connection with 1009.
	DefaultMaxFrameBytes = 32 * 1024
	// DefaultMaxMessageBytes: a larger message closes the connection with 1009; a
	// larger @connections POST is refused with 413.
	DefaultMaxMessageBytes = 128 * 1024
	// DefaultIdleTimeout: no message either way for this long closes with 1001.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxConnectionDuration: every connection is closed with 1001 after this.
	DefaultMaxConnectionDuration = 2 * time.Hour
	// DefaultIntegrationTimeout is the WebSocket API's 29 s integration limit.
	DefaultIntegrationTimeout = 29 * time.Second
	// DefaultHTTPIntegrationTimeout is the HTTP API's 30 s integration limit.
	DefaultHTTPIntegrationTimeout = 30 * time.Second
	// DefaultAddr binds to a free loopback port.
	DefaultAddr = "127.0.0.1:0"
	// DefaultRegion and DefaultAccountID appear in ARNs.
	DefaultRegion    = "us-east-1"
	DefaultAccountID = "000000000000"
)

// ErrNotLoopback is returned by Start for an address outside 127.0.0.0/8 or ::1:
// the local stack never listens beyond this machine.
var ErrNotLoopback = errors.New("address is not loopback")

// Server is the API Gateway emulator. Set the exported fields before Start.
type Server struct {
	// Addr is the WebSocket API's listener (also serving @connections and any handler
	// added with Handle); HTTPAddr is the HTTP API's. Both must be loopback.
	Addr, HTTPAddr string
	Region         string
	AccountID      string

	MaxFrameBytes          int
	MaxMessageBytes        int
	IdleTimeout            time.Duration
	MaxConnectionDuration  time.Duration
	IntegrationTimeout     time.Duration
	HTTPIntegrationTimeout time.Duration

	// Authority, when set, verifies the SigV4 signature (service execute-api) of
	// every @connections request, refusing it as the management API does. Nil
	// accepts any well-formed signature.
	Authority *identity.Authority
	// Authorizer, when set with Authority, authorises every @connections request:
	// execute-api:ManageConnections on
	// arn:aws:execute-api:<region>:<account>:<apiId>/<stage>/<METHOD>/@connections/<id>.
	Authorizer identity.Authorizer

	// NewConnectionRate, when positive, is the account's quota of new WebSocket
	// connections per second (DefaultNewConnectionRate in AWS), NewConnectionBurst how
	// many may come at once (one second's worth when zero): a handshake over it is
	// refused with 429 before the authorizer runs, as API Gateway refuses it. Zero
	// enforces none.
	NewConnectionRate  float64
	NewConnectionBurst int

	// SequentialDispatch invokes the integrations of one connection's frames one at
	// a time, in order. API Gateway does not: each frame is an independent
	// invocation, so they may run concurrently and finish out of order; the default
	// (false) reproduces that.
	SequentialDispatch bool

	cfg Config
	inv Invoker
	log *slog.Logger
	mux *http.ServeMux

	ctx    context.Context
	cancel context.CancelFunc

	quota connectQuota

	mu      sync.Mutex
	conns   map[string]*conn
	drop    int // $disconnects still to drop (DropDisconnects); < 0: all
	started bool
	closed  bool
	wsLn    net.Listener
	httpLn  net.Listener
	wsSrv   *http.Server
	httpSrv *http.Server
	work    sync.WaitGroup // connections, dispatches and $disconnect invocations
}

// New returns a gateway serving cfg through inv.
func New(cfg Config, inv Invoker, log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.WebSocket != nil && cfg.WebSocket.APIID == "" {
		c := *cfg.WebSocket
		c.APIID = newAPIID()
		cfg.WebSocket = &c
	}
	if cfg.HTTP != nil && cfg.HTTP.APIID == "" {
		c := *cfg.HTTP
		c.APIID = newAPIID()
		cfg.HTTP = &c
	}
	return &Server{
		Addr:                   DefaultAddr,
		HTTPAddr:               DefaultAddr,
		Region:                 DefaultRegion,
		AccountID:              DefaultAccountID,
		MaxFrameBytes:          DefaultMaxFrameBytes,
		MaxMessageBytes:        DefaultMaxMessageBytes,
		IdleTimeout:            DefaultIdleTimeout,
		MaxConnectionDuration:  DefaultMaxConnectionDuration,
		IntegrationTimeout:     DefaultIntegrationTimeout,
		HTTPIntegrationTimeout: DefaultHTTPIntegrationTimeout,
		cfg:                    cfg,
		inv:                    inv,
		log:                    log,
		mux:                    http.NewServeMux(),
		ctx:                    ctx,
		cancel:                 cancel,
		conns:                  map[string]*conn{},
	}
}

// Handle adds a handler to the WebSocket API's listener, for pages and endpoints the
// local stack serves beside the API (a demo page, a signing endpoint). Patterns must
// not overlap /{stage} and /@connections/.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Start listens and serves. It fails for non-loopback addresses.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("start gateway: already started")
	}
	s.started = true
	if ws := s.cfg.WebSocket; ws != nil {
		s.mux.HandleFunc("GET /"+ws.Stage, s.serveWebSocket)
		s.mux.HandleFunc("/@connections/{id}", s.serveConnections)
		s.mux.HandleFunc("/{stage}/@connections/{id}", s.serveConnections)
	}
	ln, err := listenLoopback(s.Addr)
	if err != nil {
		return fmt.Errorf("start gateway: %w", err)
	}
	s.wsLn = ln
	s.wsSrv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.wsSrv.Serve(ln) }()
	if s.cfg.HTTP != nil {
		hl, err := listenLoopback(s.HTTPAddr)
		if err != nil {
			_ = s.wsSrv.Close()
			return fmt.Errorf("start gateway: %w", err)
		}
		s.httpLn = hl
		s.httpSrv = &http.Server{Handler: http.HandlerFunc(s.serveHTTPAPI), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = s.httpSrv.Serve(hl) }()
	}
	return nil
}

func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen %s: %w", addr, ErrNotLoopback)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// WebSocketURL returns the stage URL clients connect to: ws://127.0.0.1:port/stage.
func (s *Server) WebSocketURL() string {
	if s.wsLn == nil || s.cfg.WebSocket == nil {
		return ""
	}
	return "ws://" + s.wsLn.Addr().String() + "/" + s.cfg.WebSocket.Stage
}

// ManagementEndpoint returns the @connections endpoint for the management API client
// (its BaseEndpoint): http://127.0.0.1:port/stage.
func (s *Server) ManagementEndpoint() string {
	if s.wsLn == nil || s.cfg.WebSocket == nil {
		return ""
	}
	return "http://" + s.wsLn.Addr().String() + "/" + s.cfg.WebSocket.Stage
}

// BaseURL returns the WebSocket listener's root, where Handle's handlers are served.
func (s *Server) BaseURL() string {
	if s.wsLn == nil {
		return ""
	}
	return "http://" + s.wsLn.Addr().String()
}

// HTTPURL returns the HTTP API's stage URL: http://127.0.0.1:port/stage, or without
// the stage for "$default".
func (s *Server) HTTPURL() string {
	if s.httpLn == nil {
		return ""
	}
	u := "http://" + s.httpLn.Addr().String()
	if st := s.cfg.HTTP.Stage; st != "" && st != "$default" {
		u += "/" + st
	}
	return u
}

// Close closes every connection with 1001 (running $disconnect for each), stops the
// listeners and waits for in-flight work.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		<-c.ready // a handshake under way finishes first
		if c.ws != nil {
			c.closeWith(1001, "Going away", "Going away")
		}
	}
	var errs []error
	if s.wsSrv != nil {
		errs = append(errs, s.wsSrv.Close())
	}
	if s.httpSrv != nil {
		errs = append(errs, s.httpSrv.Close())
	}
	s.work.Wait()
	s.cancel()
	return errors.Join(errs...)
}

// DropDisconnects makes the next n connections that end (every one when n < 0, none
// when 0) end without a $disconnect invocation, as API Gateway does on occasion: their
// connection records stay behind until something finds them gone (the management
// API answers 410 for them, as for any closed connection).
func (s *Server) DropDisconnects(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = n
}

// end forgets an ended connection and reports whether its $disconnect is dropped:
// one decision under one lock, so connections are counted against DropDisconnects in
// the order the gateway stops knowing them (GetConnection answers 410 from then on).
func (s *Server) end(c *conn) (dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	switch {
	case s.drop > 0:
		s.drop--
		return true
	case s.drop < 0:
		return true
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// lookup returns the connection id, waiting briefly for one whose handshake is
// completing; nil when there is none (410).
func (s *Server) lookup(id string) *conn {
	s.mu.Lock()
	c := s.conns[id]
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-c.ready:
	case <-t.C:
		return nil
	}
	if c.ws == nil {
		return nil // the handshake failed
	}
	return c
}

func (s *Server) methodARN(route string) string {
	return "arn:aws:execute-api:" + s.Region + ":" + s.AccountID + ":" + s.cfg.WebSocket.APIID + "/" + s.cfg.WebSocket.Stage + "/" + route
}

// writeJSONError writes API Gateway's plain error body {"message": msg}.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return strings.Trim(host, "[]")
}
