package demoworkload_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/internal/demoworkload"
)

func start(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&demoworkload.Server{Dir: dir, Log: slog.New(slog.NewJSONHandler(io.Discard, nil))}).Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "ws://" + ln.Addr().String() + "/"
}

type client struct {
	t *testing.T
	c *websocket.Conn
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	cl := &client{t, c}
	if m := cl.readJSON(); m["type"] != "hello" {
		t.Fatalf("first frame %v", m)
	}
	return cl
}

func (c *client) send(typ websocket.MessageType, s string) {
	c.t.Helper()
	if err := c.c.Write(context.Background(), typ, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() (websocket.MessageType, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.c.Read(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return typ, string(b)
}

func (c *client) readJSON() map[string]any {
	c.t.Helper()
	_, s := c.read()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		c.t.Fatalf("%q: %v", s, err)
	}
	return m
}

func TestServer_NotesPersistInWorkspace(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, start(t, dir))
	c.send(websocket.MessageText, `{"type":"note","text":"buy milk"}`)
	if m := c.readJSON(); m["type"] != "note.saved" || m["count"] != 1.0 {
		t.Fatalf("saved: %v", m)
	}
	c.send(websocket.MessageText, "/note call mum")
	if m := c.readJSON(); m["count"] != 2.0 {
		t.Fatalf("saved: %v", m)
	}
	// A fresh server over the same workspace (a restarted sandbox) sees both notes.
	c2 := dial(t, start(t, dir))
	c2.send(websocket.MessageText, "/notes")
	m := c2.readJSON()
	notes, _ := m["notes"].([]any)
	if len(notes) != 2 || notes[0] != "buy milk" || notes[1] != "call mum" {
		t.Fatalf("notes: %v", m)
	}
	files, _ := filepath.Glob(filepath.Join(dir, demoworkload.NotesDir, "*.txt"))
	if len(files) != 2 {
		t.Fatalf("files: %v", files)
	}
}

func TestServer_ForgetDeletesEveryNote(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, start(t, dir))
	for _, n := range []string{"/note one", "/note two"} {
		c.send(websocket.MessageText, n)
		c.readJSON()
	}
	c.send(websocket.MessageText, "/forget")
	if m := c.readJSON(); m["type"] != "notes.forgotten" || m["count"] != 2.0 {
		t.Fatalf("forget: %v", m)
	}
	c.send(websocket.MessageText, `{"type":"notes"}`)
	if m := c.readJSON(); len(m["notes"].([]any)) != 0 {
		t.Fatalf("notes after forget: %v", m)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, demoworkload.NotesDir, "*.txt")); len(files) != 0 {
		t.Fatalf("files: %v", files)
	}
}

func TestServer_EchoesOtherFrames(t *testing.T) {
	c := dial(t, start(t, t.TempDir()))
	for _, f := range []string{"hello", `{"type":"chat","text":"hi"}`, `{"action":"x"}`, "/notesx"} {
		c.send(websocket.MessageText, f)
		if typ, got := c.read(); got != f || typ != websocket.MessageText {
			t.Fatalf("echo %q = %q", f, got)
		}
	}
	c.send(websocket.MessageBinary, "\x00\x01")
	if typ, got := c.read(); got != "\x00\x01" || typ != websocket.MessageBinary {
		t.Fatalf("binary echo = %q %v", got, typ)
	}
}

func TestServer_BadNotes(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, start(t, dir))
	for _, f := range []string{`{"type":"note","text":"   "}`, `{"type":"note","text":"` + strings.Repeat("x", demoworkload.MaxNoteBytes+1) + `"}`} {
		c.send(websocket.MessageText, f)
		if m := c.readJSON(); m["type"] != "error" {
			t.Fatalf("bad note accepted: %v", m)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, demoworkload.NotesDir)); err == nil {
		if files, _ := filepath.Glob(filepath.Join(dir, demoworkload.NotesDir, "*")); len(files) != 0 {
			t.Fatalf("bad notes left files: %v", files)
		}
	}
}
