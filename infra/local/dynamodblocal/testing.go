package dynamodblocal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"sync"
	"testing"
)

// shared is the one in-memory emulator of a test binary.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// StartForTest returns the test binary's shared in-memory DynamoDB Local, starting it
// on first use, so a package pays for one JVM start however many tests it has. Tests
// must not Stop or Restart it; each test creates its own table (see TableName). It
// fails the test, never skips it, when Java or the jar is missing.
//
// The server is stopped by RunTests when the package uses it in TestMain; without
// that, it dies with the test binary (proc starts it with a parent-death signal), so
// no process is left behind either way.
func StartForTest(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		shared.srv, shared.err = Start(context.Background(), Options{})
	})
	if shared.err != nil {
		tb.Fatalf("DynamoDB Local: %v", shared.err)
	}
	return shared.srv
}

// RunTests runs m and then stops the shared server if a test started it. Use it as
// func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }.
func RunTests(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		_ = shared.srv.Stop()
	}
	return code
}

var unsafeTableChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// TableName returns a table name unique to this test and run: the test's name made
// legal for DynamoDB (3–255 of [A-Za-z0-9_.-]) plus a random suffix.
func TableName(tb testing.TB) string {
	tb.Helper()
	name := unsafeTableChars.ReplaceAllString(tb.Name(), "_")
	if len(name) > 200 {
		name = name[:200]
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}
