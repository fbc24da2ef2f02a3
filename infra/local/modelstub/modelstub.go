// Package modelstub is a stand-in for a model provider's API on loopback: the part of
// Anthropic's Messages API an agent gateway uses (POST /v1/messages, streamed as
// server-sent events or answered whole, with token usage), answering every call that
// carries its key and refusing the others, as the provider does. The local stack's
// model API (make dev WORKLOAD=node, the end-to-end tests) and the benchmarks run
// against it; nothing about it is a model.
package modelstub

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Paths the stub serves.
const (
	PathMessages = "/v1/messages"
	// PathEcho answers with the request's headers: a careless upstream that reflects
	// what it is sent, for the tests that check the key never reaches the workload.
	PathEcho = "/v1/echo"
)

// DefaultDeltas is how many frames a streamed reply is cut into (at least).
const DefaultDeltas = 4

// Server is the stub. Set the fields before Start.
type Server struct {
	// Key is the only credential it accepts, in Header.
	Key string
	// Header carries the key: "X-Api-Key" (Anthropic's) when empty; "Authorization"
	// expects "Bearer <key>".
	Header string
	// Deltas is how many text deltas a streamed reply has (DefaultDeltas when 0).
	Deltas int
	// DeltaDelay is a pause between deltas, so a stream is seen to arrive over time.
	DeltaDelay time.Duration

	srv *http.Server
	ln  net.Listener

	mu      sync.Mutex
	calls   int
	refused int
}

// Start serves on addr (127.0.0.1:0 when empty) until Close.
func (s *Server) Start(addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if s.Key == "" {
		return fmt.Errorf("modelstub: no key")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("modelstub: %w", err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return nil
}

// URL is the stub's base URL, what a team would set as ModelApiUrl.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the stub.
func (s *Server) Close() error { return s.srv.Close() }

// Calls returns how many calls carried the key, and how many were refused.
func (s *Server) Calls() (answered, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.refused
}

func (s *Server) authorized(r *http.Request) bool {
	header, want := s.Header, s.Key
	if header == "" {
		header = "X-Api-Key"
	}
	if http.CanonicalHeaderKey(header) == "Authorization" {
		want = "Bearer " + s.Key
	}
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(header)), []byte(want)) == 1
}

// Message is one turn of a conversation, as the Messages API takes it.
type Message struct {
	Role    string `json:"role"`
	Content any    `json:"content"` // a string, or blocks with "text"
}

// Request is the part of a Messages API request the stub reads.
type Request struct {
	Model     string    `json:"model"`
	System    any       `json:"system,omitempty"`
	Messages  []Message `json:"messages"`
	Stream    bool      `json:"stream"`
	MaxTokens int       `json:"max_tokens"`
}

func text(content any) string {
	switch c := content.(type) {
	case string:
		return c
	case []any:
		var parts []string
		for _, b := range c {
			if m, ok := b.(map[string]any); ok {
				if t, ok := m["text"].(string); ok {
					parts = append(parts, t)
				}
			}
		}
		return strings.Join(parts, " ")
	}
	return ""
}

// Reply is what the stub answers a conversation: the turn it is (the user messages
// it was sent, so a conversation that lost its history shows it), the system prompt's
// first words when there is one, and the last user message quoted.
func Reply(req Request) string {
	turn, last := 0, ""
	for _, m := range req.Messages {
		if m.Role == "user" {
			turn++
			last = text(m.Content)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Turn %d. ", turn)
	if sys := text(req.System); sys != "" {
		fmt.Fprintf(&b, "(%s) ", sys)
	}
	fmt.Fprintf(&b, "You said: %q.", last)
	return b.String()
}

// tokens counts words, the stub's idea of a token.
func tokens(s string) int { return len(strings.Fields(s)) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || (r.URL.Path != PathMessages && r.URL.Path != PathEcho) {
		writeError(w, http.StatusNotFound, "not_found_error", "not found")
		return
	}
	if !s.authorized(r) {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return
	}
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	if r.URL.Path == PathEcho {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"headers": r.Header})
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "want a JSON body with messages")
		return
	}
	reply := Reply(req)
	in := 0
	for _, m := range req.Messages {
		in += tokens(text(m.Content))
	}
	in += tokens(text(req.System))
	out := tokens(reply)
	id := fmt.Sprintf("msg_stub_%d", time.Now().UnixNano())
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": req.Model,
			"content":     []map[string]string{{"type": "text", "text": reply}},
			"stop_reason": "end_turn",
			"usage":       map[string]int{"input_tokens": in, "output_tokens": out},
		})
		return
	}
	s.stream(w, r, id, req.Model, reply, in, out)
}

// stream sends the reply as Anthropic streams it: message_start, a text block in
// several deltas, message_delta with the output's usage, message_stop.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, id, model, reply string, in, out int) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	f, _ := w.(http.Flusher)
	event := func(name string, data any) bool {
		b, _ := json.Marshal(data)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return false
		}
		if f != nil {
			f.Flush()
		}
		return r.Context().Err() == nil
	}
	if !event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"usage": map[string]int{"input_tokens": in, "output_tokens": 1}}}) {
		return
	}
	event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
		"content_block": map[string]string{"type": "text", "text": ""}})
	for _, part := range split(reply, max(s.Deltas, DefaultDeltas)) {
		if s.DeltaDelay > 0 {
			select {
			case <-time.After(s.DeltaDelay):
			case <-r.Context().Done():
				return
			}
		}
		if !event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]string{"type": "text_delta", "text": part}}) {
			return
		}
	}
	event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn"},
		"usage": map[string]int{"output_tokens": out}})
	event("message_stop", map[string]any{"type": "message_stop"})
}

// split cuts s into n parts of about equal length (fewer when s is shorter), which
// joined give s back.
func split(s string, n int) []string {
	r := []rune(s)
	n = min(n, len(r))
	if n <= 1 {
		return []string{s}
	}
	var out []string
	for i := range n {
		out = append(out, string(r[i*len(r)/n:(i+1)*len(r)/n]))
	}
	return out
}

func writeError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]string{"type": kind, "message": msg}})
}
