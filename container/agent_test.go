package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// note asks the demo workload to save a note and returns the reply.
func note(t *testing.T, e *env, sb *sandbox, cl *client, text string) map[string]any {
	t.Helper()
	frame, _ := json.Marshal(map[string]string{"type": "note", "text": text})
	if err := e.api.Deliver(context.Background(), sb.target(), cl.id, frame); err != nil {
		t.Fatal(err)
	}
	reply := cl.until(10*time.Second, jsonType("note.saved"))
	var m map[string]any
	json.Unmarshal(reply[len(reply)-1], &m)
	return m
}

func TestAgent_SIGTERM_EverythingSavedAndRestored(t *testing.T) {
	e := newEnv(t, timings{"SYNC_INTERVAL": "1h"})
	user := e.user("term")
	sb := e.start(user)
	cl := e.connect(user)
	cl.until(20*time.Second, status("ready"))
	saved := note(t, e, sb, cl, "written just before SIGTERM")
	name, _ := saved["name"].(string)
	sb.stop()
	cl.until(10*time.Second, status("stopping"))
	if code := sb.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	rec, err := shared.Store.Get(context.Background(), user)
	if err != nil || rec.State != state.Stopped {
		t.Fatalf("record after stop: %v, %v", rec, err)
	}
	got := e.object(user, "notes/"+name)
	if !bytes.Equal(got, []byte("written just before SIGTERM\n")) {
		t.Fatalf("stored note = %q", got)
	}
}
