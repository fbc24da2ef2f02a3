package e2e_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeFile puts data at rel under dir, as a workload would.
func writeFile(t *testing.T, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaced waits until the user's sandbox runs again and fails the test unless it is
// a new one: another task, a later generation than old.
func replaced(t *testing.T, s *testkit.Stack, user string, old *state.Sandbox) *state.Sandbox {
	t.Helper()
	sb := s.Running(t, user, reply)
	if sb.TaskARN == old.TaskARN || sb.Generation <= old.Generation {
		t.Fatalf("%s: not a new sandbox: %s generation %d after %s generation %d", user, sb.TaskARN, sb.Generation, old.TaskARN, old.Generation)
	}
	return sb
}

// wantNotes fails the test unless the demo workload lists exactly want as c's notes.
func wantNotes(t *testing.T, c *testkit.Client, want ...string) {
	t.Helper()
	if got := c.Notes(reply); !slices.Equal(got, want) {
		t.Fatalf("%s: notes %q, want %q", c.User, got, want)
	}
}

// withSyncedNote connects as user, saves note and waits until a sync has stored it;
// it returns the client and the running sandbox's record.
func withSyncedNote(t *testing.T, s *testkit.Stack, user, note string) (*testkit.Client, *state.Sandbox) {
	t.Helper()
	c := s.DialReady(t, user, coldStart)
	c.Note(note, reply)
	s.NotesSynced(t, user, 1, reply)
	return c, s.Running(t, user, reply)
}
