package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/sandgate/sandgate/infra/local/modelstub"
	"github.com/sandgate/sandgate/infra/local/stack"
)

// Workloads make dev can run in every sandbox (-workload).
const (
	workloadDemo = "demo" // the built-in Go demo (the image's default)
	workloadNode = "node" // container/node-gateway, with a model API
)

// EnvModelKey holds the key of the model API -model-url names; never a flag, which
// any user of the machine could read in the process list.
const EnvModelKey = "SANDGATE_DEV_MODEL_KEY"

// workloadSetup is what a workload choice adds to the stack.
type workloadSetup struct {
	command string          // SANDBOX_COMMAND; empty keeps the template's (the demo)
	model   *stack.ModelAPI // the model API the stack is deployed with, if any
	stub    *modelstub.Server
	dir     string // a copy of the workload's files, removed by close
	// shown is what the banner says about the workload and the model, and try a
	// frame to send.
	shown, modelShown, try string
}

func (w *workloadSetup) close() {
	if w.stub != nil {
		w.stub.Close()
	}
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// setupWorkload prepares name (or command, which wins) and the model API: modelURL with
// the key in EnvModelKey, or, for the Node example without one, a stub on loopback.
func setupWorkload(name, command, modelURL, repo string) (_ *workloadSetup, err error) {
	w := &workloadSetup{shown: "the built-in demo (Go)", modelShown: "none (-model-url, or -workload=node for a stub)",
		try: `{"type":"note","text":"hello"}   or   {"type":"notes"}`}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	switch {
	case command != "":
		w.command, w.shown, w.try = command, command, "whatever your workload speaks"
	case name == workloadDemo:
	case name == workloadNode:
		node, err := exec.LookPath("node")
		if err != nil {
			return nil, fmt.Errorf("-workload=node needs node (20 or later) on PATH: %w", err)
		}
		if node, err = filepath.Abs(node); err != nil {
			return nil, err
		}
		// Each sandbox's workload runs under a uid of its own: it runs a copy every
		// user may read, not the checkout.
		if w.dir, err = os.MkdirTemp("", "sandgate-node-gateway-"); err != nil {
			return nil, err
		}
		if err := os.Chmod(w.dir, 0o755); err != nil {
			return nil, err
		}
		for _, f := range []string{"gateway.js", "websocket.js", "package.json"} {
			b, err := os.ReadFile(filepath.Join(repo, "container", "node-gateway", f))
			if err != nil {
				return nil, fmt.Errorf("the Node example: %w", err)
			}
			if err := os.WriteFile(filepath.Join(w.dir, f), b, 0o644); err != nil {
				return nil, err
			}
		}
		w.command = node + " " + filepath.Join(w.dir, "gateway.js")
		w.shown = "the Node example (container/node-gateway), " + w.command
		w.try = `{"type":"chat","text":"hello"}   then   {"type":"history"}`
	default:
		return nil, fmt.Errorf("-workload=%q: want %s or %s (or -workload-command)", name, workloadDemo, workloadNode)
	}
	switch {
	case modelURL != "":
		key := os.Getenv(EnvModelKey)
		if key == "" {
			return nil, fmt.Errorf("-model-url needs the key in %s", EnvModelKey)
		}
		w.model = &stack.ModelAPI{URL: modelURL, Key: key}
		w.modelShown = modelURL + " (the key from " + EnvModelKey + ", in the local Secrets Manager)"
	case name == workloadNode && command == "":
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		w.stub = &modelstub.Server{Key: "sk-dev-" + hex.EncodeToString(b)}
		if err := w.stub.Start(""); err != nil {
			return nil, err
		}
		w.model = &stack.ModelAPI{URL: w.stub.URL(), Key: w.stub.Key, Header: "x-api-key"}
		w.modelShown = "a stub on " + w.stub.URL() + " (infra/local/modelstub; it quotes you back)"
	}
	return w, nil
}
