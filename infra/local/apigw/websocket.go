package apigw

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/logging"
)

// Close codes and reasons API Gateway uses when it ends a connection itself.
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeUnsupported   = 1003
	closeAbnormal      = 1006
	closeMessageTooBig = 1009

	reasonGoingAway   = "Going away"
	reasonTooBig      = "Message too big"
	reasonBinary      = "Binary frames are not supported"
	reasonDeleted     = "Connection Closed Normally"
	headerSubprotocol = "Sec-WebSocket-Protocol"
)

// conn is one accepted WebSocket connection.
type conn struct {
	s           *Server
	id          string
	ws          *websocket.Conn
	watcher     *frameWatcher
	connectedAt time.Time
	sourceIP    string
	userAgent   string
	host        string
	authorizer  map[string]any
	log         *slog.Logger

	closeDone chan struct{} // closed when a server-initiated close handshake ends
	ended     chan struct{} // closed when the connection is gone
	// ready is closed once the handshake is over: ws is set, or nil if it failed.
	ready chan struct{}

	mu           sync.Mutex
	lastActive   time.Time
	serverClosed bool
	closeCode    int
	closeReason  string
}

func (c *conn) touch() {
	c.mu.Lock()
	c.lastActive = time.Now()
	c.mu.Unlock()
}

func (c *conn) lastActiveAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastActive
}

// closeWith starts a server-initiated close: the connection stops being postable at
// once, the client gets a close frame with wireCode and wireReason, and $disconnect
// reports wireCode with disconnectReason.
func (c *conn) closeWith(wireCode int, wireReason, disconnectReason string) {
	c.mu.Lock()
	if c.serverClosed {
		c.mu.Unlock()
		return
	}
	c.serverClosed, c.closeCode, c.closeReason = true, wireCode, disconnectReason
	c.mu.Unlock()
	c.s.remove(c)
	go func() {
		_ = c.ws.Close(websocket.StatusCode(wireCode), wireReason)
		close(c.closeDone)
	}()
}

func (c *conn) send(ctx context.Context, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		return err
	}
	c.touch()
	return nil
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

// isUpgrade reports whether r is a WebSocket opening handshake.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket") &&
		r.Header.Get("Sec-WebSocket-Key") != ""
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		writeJSONError(w, http.StatusUpgradeRequired, "Upgrade Required")
		return
	}
	if s.isClosed() {
		writeJSONError(w, http.StatusServiceUnavailable, "Service Unavailable")
		return
	}
	if !s.admitConnection() {
		// The account's new-connection quota: refused before anything runs.
		s.log.Warn("connect throttled", logging.Reason, "new connection rate", "status", http.StatusTooManyRequests)
		writeJSONError(w, http.StatusTooManyRequests, "Too Many Requests")
		return
	}
	now := time.Now()
	c := &conn{
		s:           s,
		id:          newID(),
		connectedAt: now,
		lastActive:  now,
		sourceIP:    sourceIP(r),
		userAgent:   r.UserAgent(),
		host:        r.Host,
		closeDone:   make(chan struct{}),
		ended:       make(chan struct{}),
	}
	c.log = s.log.With(logging.ConnectionID, c.id)
	ws := s.cfg.WebSocket
	route, hasConnect := ws.Routes[RouteConnect]

	if hasConnect && route.Authorizer != nil {
		status, reason := s.authorize(r, c, route.Authorizer)
		if status != 0 {
			c.log.Warn("connect refused", logging.Reason, reason, "status", status)
			writeJSONError(w, status, http.StatusText(status))
			return
		}
	}
	var subprotocols []string
	if hasConnect {
		resp, status, reason := s.connectIntegration(r, c, route)
		if status != 0 {
			c.log.Warn("connect refused", logging.Reason, reason, "status", status)
			if resp != nil && resp.Body != "" {
				for k, v := range resp.Headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(status)
				_, _ = io.WriteString(w, resp.Body)
			} else {
				writeJSONError(w, status, http.StatusText(status))
			}
			return
		}
		if resp != nil {
			for k, v := range resp.Headers {
				if strings.EqualFold(k, headerSubprotocol) {
					subprotocols = append(subprotocols, v)
				}
			}
		}
	}

	// The connection is known before the client sees the handshake succeed, so a post
	// made as soon as it has (by the client's backend, say) finds it, as in API Gateway;
	// lookup waits for the last step.
	c.ready = make(chan struct{})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.conns[c.id] = c
	s.work.Add(1)
	s.mu.Unlock()
	defer s.work.Done()

	ww := &watchingWriter{ResponseWriter: w, limit: int64(s.MaxFrameBytes)}
	wsc, err := websocket.Accept(ww, r, &websocket.AcceptOptions{
		// API Gateway checks no Origin; authorization is the authorizer's job.
		InsecureSkipVerify: true,
		Subprotocols:       subprotocols,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		s.remove(c)
		close(c.ready)
		c.log.Warn("connect failed", logging.Error, err.Error())
		// $connect succeeded, so API Gateway counts the connection as made and sends its
		// $disconnect when it finds the client gone (unless it drops it, as it may).
		if d, ok := ws.Routes[RouteDisconnect]; ok && hasConnect {
			if s.end(c) {
				c.log.Info("$disconnect dropped", logging.Route, RouteDisconnect, logging.Reason, "DropDisconnects")
				return
			}
			s.disconnect(c, d, closeAbnormal, "")
		}
		return
	}
	wsc.SetReadLimit(-1) // the gateway enforces its own limits below
	c.ws, c.watcher = wsc, ww.watcher
	close(c.ready)
	if s.isClosed() {
		_ = wsc.Close(closeGoingAway, reasonGoingAway)
		return
	}

	if uid, ok := c.authorizer["userId"].(string); ok {
		c.log = c.log.With(logging.UserID, uid)
	}
	c.log.Info("connected", "sourceIp", c.sourceIP)
	go c.watchTimeouts()
	code, reason := c.readLoop()
	close(c.ended)
	dropped := s.end(c)
	c.log.Info("disconnected", "disconnectStatusCode", code, logging.Reason, reason)
	if d, ok := ws.Routes[RouteDisconnect]; ok {
		if dropped {
			c.log.Info("$disconnect dropped", logging.Route, RouteDisconnect, logging.Reason, "DropDisconnects")
			return
		}
		s.disconnect(c, d, code, reason)
	}
}

// readLoop reads messages until the connection ends and returns the status code and
// reason $disconnect reports.
func (c *conn) readLoop() (int, string) {
	s := c.s
	for {
		typ, rd, err := c.ws.Reader(context.Background())
		if err != nil {
			return c.endStatus(err)
		}
		data, err := io.ReadAll(io.LimitReader(rd, int64(s.MaxMessageBytes)+1))
		if err != nil {
			return c.endStatus(err)
		}
		switch {
		case c.watcher != nil && c.watcher.exceeded.Load(), len(data) > s.MaxMessageBytes:
			c.log.Warn("message over the limit", "bytes", len(data))
			c.closeWith(closeMessageTooBig, reasonTooBig, reasonTooBig)
		case typ == websocket.MessageBinary:
			c.closeWith(closeUnsupported, reasonBinary, reasonBinary)
		}
		c.mu.Lock()
		closing := c.serverClosed
		c.mu.Unlock()
		if closing {
			// Frames after a close are dropped, as the gateway does; wait for the
			// close handshake (which reads what is left) to end.
			<-c.closeDone
			return c.endStatus(nil)
		}
		c.touch()
		if s.SequentialDispatch {
			s.dispatch(c, data)
			continue
		}
		s.work.Add(1)
		go func() {
			defer s.work.Done()
			s.dispatch(c, data)
		}()
	}
}

func (c *conn) endStatus(err error) (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.serverClosed {
		return c.closeCode, c.closeReason
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code), ce.Reason
	}
	return closeAbnormal, ""
}

// watchTimeouts closes the connection after IdleTimeout without a message either way,
// or MaxConnectionDuration after it opened.
func (c *conn) watchTimeouts() {
	s := c.s
	for {
		now := time.Now()
		idle := c.lastActiveAt().Add(s.IdleTimeout).Sub(now)
		life := c.connectedAt.Add(s.MaxConnectionDuration).Sub(now)
		wait := min(idle, life)
		if wait <= 0 {
			c.log.Info("closing", logging.Reason, map[bool]string{true: "idle", false: "max_duration"}[idle <= 0])
			c.closeWith(closeGoingAway, reasonGoingAway, reasonGoingAway)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.ended:
			t.Stop()
			return
		}
	}
}

// dispatch routes one message and invokes its integration.
func (s *Server) dispatch(c *conn, body []byte) {
	ws := s.cfg.WebSocket
	key := selectRoute(ws.RouteSelectionExpression, body, ws.Routes)
	requestID := newID()
	route, ok := ws.Routes[key]
	if !ok {
		c.log.Info("no route", logging.RequestID, requestID)
		s.notify(c, "Forbidden", requestID)
		return
	}
	now := time.Now()
	ev := events.APIGatewayWebsocketProxyRequest{
		StageVariables: nonEmpty(ws.StageVariables),
		RequestContext: c.context(key, "MESSAGE", requestID, now),
		Body:           string(body),
	}
	ev.RequestContext.MessageID = newID()
	payload, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(s.ctx, s.IntegrationTimeout)
	defer cancel()
	out, err := s.invoke(ctx, route.Function, payload)
	if err != nil {
		c.log.Warn("integration failed", logging.Route, key, logging.RequestID, requestID, logging.Error, err.Error())
		if errors.Is(err, context.DeadlineExceeded) {
			s.notify(c, "Endpoint request timed out", requestID)
		} else {
			s.notify(c, "Internal server error", requestID)
		}
		return
	}
	if route.TwoWay {
		var resp events.APIGatewayProxyResponse
		if json.Unmarshal(out, &resp) == nil && resp.Body != "" {
			_ = c.send(s.ctx, []byte(resp.Body))
		}
	}
}

func (s *Server) invoke(ctx context.Context, function string, payload []byte) ([]byte, error) {
	if function == "" {
		return nil, errors.New("integration is not a Lambda proxy integration")
	}
	return s.inv.Invoke(ctx, function, payload)
}

// notify sends API Gateway's own error frame to the client.
func (s *Server) notify(c *conn, msg, requestID string) {
	b, _ := json.Marshal(struct {
		Message      string `json:"message"`
		ConnectionID string `json:"connectionId"`
		RequestID    string `json:"requestId"`
	}{msg, c.id, requestID})
	_ = c.send(s.ctx, b)
}

// selectRoute evaluates a route selection expression such as $request.body.action
// against a message: a JSON object whose field names an existing route picks it,
// anything else goes to $default.
func selectRoute(expr string, body []byte, routes map[string]Route) string {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "${") && strings.HasSuffix(expr, "}") {
		expr = "$" + expr[2:len(expr)-1]
	}
	path, ok := strings.CutPrefix(expr, "$request.body.")
	if !ok {
		return RouteDefault
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return RouteDefault
	}
	for _, field := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return RouteDefault
		}
		v = m[field]
	}
	key, ok := v.(string)
	if !ok || key == RouteConnect || key == RouteDisconnect {
		return RouteDefault
	}
	if _, ok := routes[key]; !ok {
		return RouteDefault
	}
	return key
}

// context returns the request context every WebSocket event carries.
func (c *conn) context(routeKey, eventType, requestID string, now time.Time) events.APIGatewayWebsocketProxyRequestContext {
	ws := c.s.cfg.WebSocket
	rc := events.APIGatewayWebsocketProxyRequestContext{
		RouteKey:          routeKey,
		EventType:         eventType,
		ExtendedRequestID: requestID,
		RequestTime:       requestTime(now),
		MessageDirection:  "IN",
		Stage:             ws.Stage,
		ConnectedAt:       c.connectedAt.UnixMilli(),
		RequestTimeEpoch:  now.UnixMilli(),
		Identity:          events.APIGatewayRequestIdentity{SourceIP: c.sourceIP, UserAgent: c.userAgent},
		RequestID:         requestID,
		DomainName:        c.host,
		ConnectionID:      c.id,
		APIID:             ws.APIID,
	}
	if c.authorizer != nil {
		rc.Authorizer = c.authorizer
	}
	return rc
}

func (s *Server) disconnect(c *conn, route Route, code int, reason string) {
	requestID := newID()
	ev := events.APIGatewayWebsocketProxyRequest{
		// API Gateway sends these four headers, some empty, with every $disconnect.
		Headers: map[string]string{"Host": c.host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
		MultiValueHeaders: map[string][]string{"Host": {c.host}, "x-api-key": {""},
			"X-Forwarded-For": {""}, "x-restapi": {""}},
		StageVariables: nonEmpty(s.cfg.WebSocket.StageVariables),
		RequestContext: c.context(RouteDisconnect, "DISCONNECT", requestID, time.Now()),
	}
	ev.RequestContext.DisconnectStatusCode = int64(code)
	ev.RequestContext.DisconnectReason = &reason
	payload, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(s.ctx, s.IntegrationTimeout)
	defer cancel()
	// $disconnect is best effort: its outcome reaches no client.
	if _, err := s.invoke(ctx, route.Function, payload); err != nil {
		c.log.Warn("disconnect integration failed", logging.RequestID, requestID, logging.Error, err.Error())
	}
}

func nonEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func listenerPort(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			return p
		}
	}
	return ""
}
