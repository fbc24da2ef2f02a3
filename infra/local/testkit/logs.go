package testkit

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/sandgate/sandgate/internal/logging"
)

// Logs is a concurrency-safe buffer of JSON log (and metric) lines.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a debug-level JSON logger writing to l.
func (l *Logs) Logger() *slog.Logger { return logging.New(l, slog.LevelDebug) }

// Lines returns the lines decoded as JSON objects, failing the test on one that is not.
func (l *Logs) Lines(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// With returns the decoded lines whose field key equals value.
func (l *Logs) With(tb testing.TB, key string, value any) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, m := range l.Lines(tb) {
		if m[key] == value {
			out = append(out, m)
		}
	}
	return out
}
