package iampolicy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the repository root: the nearest directory above the working
// directory that holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// StartForTest starts an Evaluator from the repository's simulate.mjs and
// node_modules, closed when the test ends. It fails the test, never skips it, when
// node or the npm packages are missing.
func StartForTest(tb testing.TB, opts Options) *Evaluator {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatalf("policy evaluator: %v", err)
	}
	e, err := Start(context.Background(), filepath.Join(root, ScriptPath), filepath.Join(root, NodeModulesPath), opts)
	if err != nil {
		tb.Fatalf("policy evaluator: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}
