package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -from-raw renders the kept outputs without running anything; a run with no kept
// output is reported as not run, and a kept failure fails the command.
func TestRun_FromRaw(t *testing.T) {
	raw, out := t.TempDir(), filepath.Join(t.TempDir(), "BENCHMARKS.md")
	fixture, err := os.ReadFile("../../benchreport/testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(raw, "relay.json"), fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run([]string{"-from-raw", "-raw", raw, "-out", out}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "no output of run storm") {
		t.Fatalf("exit %d (the fixture holds a failure), stderr:\n%s", code, stderr.String())
	}
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| 1 | 5.05 ms |", "_Not run._", "## Failures", "BenchmarkBroken"} {
		if !strings.Contains(string(doc), want) {
			t.Fatalf("report lacks %q:\n%s", want, doc)
		}
	}
}

func TestRun_BadFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"-only", "nope"}, &stderr); code != 2 || !strings.Contains(stderr.String(), `no run "nope"`) {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if code := run([]string{"extra"}, &stderr); code != 2 {
		t.Fatalf("exit %d for an argument", code)
	}
}
