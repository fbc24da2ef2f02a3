package demoworkload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// NotesDir is where notes live, relative to the workspace.
const NotesDir = "notes"

// MaxNoteBytes bounds one note; the demo is not a file store.
const MaxNoteBytes = 4 << 10

// Server is the demo workload.
type Server struct {
	// Dir is the user's workspace; notes are files under Dir/notes.
	Dir string
	Log *slog.Logger

	mu sync.Mutex // serialises note writes so numbering stays dense
}

// Reply frames.
type noteSaved struct {
	Type  string `json:"type"` // "note.saved"
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type noteList struct {
	Type  string   `json:"type"` // "notes"
	Notes []string `json:"notes"`
}

type hello struct {
	Type  string `json:"type"` // "hello"
	Notes int    `json:"notes"`
	Help  string `json:"help"`
}

const help = `send {"type":"note","text":"..."} or "/note <text>" to save a note, {"type":"notes"} or "/notes" to list them, {"type":"forget"} or "/forget" to delete them all; anything else is echoed`

type notesForgotten struct {
	Type  string `json:"type"` // "notes.forgotten"
	Count int    `json:"count"`
}

// ServeHTTP accepts one WebSocket per client connection (the agent opens one upstream
// per client) and answers its frames until either side closes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(256 << 10)
	defer c.CloseNow()
	ctx := r.Context()
	log := s.Log.With("connectionId", r.Header.Get("X-Sandgate-Connection"))
	notes, _ := s.list()
	if err := writeJSON(ctx, c, hello{Type: "hello", Notes: len(notes), Help: help}); err != nil {
		return
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		reply, rtyp, err := s.handle(typ, data)
		if err != nil {
			log.Error("demo: frame failed", "error", err.Error())
			reply, rtyp = []byte(fmt.Sprintf(`{"type":"error","message":%q}`, err.Error())), websocket.MessageText
		}
		if err := c.Write(ctx, rtyp, reply); err != nil {
			return
		}
	}
}

func (s *Server) handle(typ websocket.MessageType, data []byte) ([]byte, websocket.MessageType, error) {
	if typ == websocket.MessageText {
		text := strings.TrimSpace(string(data))
		var cmd struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		switch {
		case text == "/notes":
			cmd.Type = "notes"
		case text == "/forget":
			cmd.Type = "forget"
		case strings.HasPrefix(text, "/note "):
			cmd.Type, cmd.Text = "note", strings.TrimPrefix(text, "/note ")
		case strings.HasPrefix(text, "{"):
			_ = json.Unmarshal(data, &cmd)
		}
		switch cmd.Type {
		case "note":
			saved, err := s.save(cmd.Text)
			if err != nil {
				return nil, 0, err
			}
			return mustJSON(saved), websocket.MessageText, nil
		case "notes":
			notes, err := s.list()
			if err != nil {
				return nil, 0, err
			}
			return mustJSON(noteList{Type: "notes", Notes: notes}), websocket.MessageText, nil
		case "forget":
			n, err := s.forget()
			if err != nil {
				return nil, 0, err
			}
			return mustJSON(notesForgotten{Type: "notes.forgotten", Count: n}), websocket.MessageText, nil
		}
	}
	return data, typ, nil
}

// save writes one note durably (temp file, fsync, rename) before it is acknowledged, so
// an acknowledged note survives a SIGTERM that follows at once.
func (s *Server) save(text string) (noteSaved, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return noteSaved{}, errors.New("empty note")
	}
	if len(text) > MaxNoteBytes {
		return noteSaved{}, fmt.Errorf("note longer than %d bytes", MaxNoteBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.Dir, NotesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	existing, err := s.names()
	if err != nil {
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	n := len(existing) + 1
	name := fmt.Sprintf("%04d-%s.txt", n, time.Now().UTC().Format("20060102T150405"))
	tmp, err := os.CreateTemp(dir, ".note-*")
	if err != nil {
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(text + "\n"); err != nil {
		tmp.Close()
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return noteSaved{}, fmt.Errorf("save note: %w", err)
	}
	return noteSaved{Type: "note.saved", Name: name, Count: n}, nil
}

// forget deletes every note (what a user, or a workload gone wrong, may do; the
// backups can bring them back) and returns how many it deleted.
func (s *Server) forget() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.names()
	if err != nil {
		return 0, fmt.Errorf("forget notes: %w", err)
	}
	for _, n := range names {
		if err := os.Remove(filepath.Join(s.Dir, NotesDir, n)); err != nil {
			return 0, fmt.Errorf("forget notes: %w", err)
		}
	}
	return len(names), nil
}

// names returns the note files' names in the order they were written.
func (s *Server) names() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, NotesDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".txt") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// list returns the notes' texts in the order they were written.
func (s *Server) list() ([]string, error) {
	dir := filepath.Join(s.Dir, NotesDir)
	names, err := s.names()
	if err != nil {
		return nil, fmt.Errorf("list notes: %w", err)
	}
	notes := make([]string, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("list notes: %w", err)
		}
		notes = append(notes, strings.TrimSpace(string(b)))
	}
	return notes, nil
}

// Serve runs the demo on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func writeJSON(ctx context.Context, c *websocket.Conn, v any) error {
	return c.Write(ctx, websocket.MessageText, mustJSON(v))
}

// mustJSON encodes v without HTML escaping: these frames go to programs, not pages.
func mustJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
