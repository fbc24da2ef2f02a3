package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sandgate/sandgate/infra/local/modelstub"
	"github.com/sandgate/sandgate/infra/local/stack"
)

// NodeGatewayFiles are the Node example's files (container/node-gateway) a sandbox runs.
var NodeGatewayFiles = []string{"gateway.js", "websocket.js", "package.json"}

// NodeGateway copies the Node example where a sandbox's workload can run it (under
// Main's directory, searchable by every uid, as BuildWorkload's programs), once per test
// binary, and returns its SANDBOX_COMMAND: node, by its absolute path, and the gateway.
func NodeGateway(tb testing.TB) string {
	tb.Helper()
	if pkg.dir == "" {
		tb.Fatal("testkit: call testkit.Main from TestMain")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatalf("testkit: the Node example needs node (20 or later) on PATH: %v", err)
	}
	if node, err = filepath.Abs(node); err != nil {
		tb.Fatal(err)
	}
	workloads.mu.Lock()
	defer workloads.mu.Unlock()
	const key = "node-gateway"
	if p, ok := workloads.built[key]; ok {
		return node + " " + p
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(pkg.dir, "workloads", key)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{pkg.dir, 0o711}, {filepath.Dir(dir), 0o755}, {dir, 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			tb.Fatal(err)
		}
	}
	for _, f := range NodeGatewayFiles {
		b, err := os.ReadFile(filepath.Join(root, "container", key, f))
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if workloads.built == nil {
		workloads.built = map[string]string{}
	}
	p := filepath.Join(dir, "gateway.js")
	workloads.built[key] = p
	return node + " " + p
}

// ModelStub is a model API on loopback (infra/local/modelstub) with a key of its own.
type ModelStub struct {
	*modelstub.Server
	Key string
}

// StartModelStub serves a model API whose key is fresh and random (so a test can look
// for it anywhere), until the test ends.
func StartModelStub(tb testing.TB) *ModelStub {
	tb.Helper()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	m := &ModelStub{Key: "sk-stub-" + hex.EncodeToString(b)}
	m.Server = &modelstub.Server{Key: m.Key}
	if err := m.Start(""); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// Deploy deploys a stack with m as its model API, the key in its Secrets Manager, sent
// in Anthropic's header.
func (m *ModelStub) Deploy(o *stack.Options) {
	o.ModelAPI = &stack.ModelAPI{URL: m.URL(), Key: m.Key, Header: "x-api-key"}
}
