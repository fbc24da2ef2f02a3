package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// Ctrl-C stops the stack cleanly and the command exits 0, so `make dev` ends without
// an error line.
func TestDev_Interrupt_StopsCleanlyAndExitsZero(t *testing.T) {
	b := testkit.Binaries(t)
	bin := filepath.Join(t.TempDir(), "dev")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	root := t.TempDir()
	cmd := exec.Command(bin, "-root", root, "-build", b.Dir, "-template", b.Template(),
		"-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-quiet", "-launch-delay", "0s")
	cmd.Dir = b.Root
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	ready, stopped := false, false
	for lines.Scan() {
		l := lines.Text()
		if strings.Contains(l, "sandgate is running locally") && !ready {
			ready = true
			if _, err := os.Stat(filepath.Join(root, "aws.env")); err != nil {
				t.Errorf("no aws.env: %v", err)
			}
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}
		if strings.TrimSpace(l) == "stopped." {
			stopped = true
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(testkit.Wait):
		t.Fatal("dev did not exit after Ctrl-C")
	}
	if !ready || !stopped {
		t.Fatalf("ready %v, stopped %v", ready, stopped)
	}
}

// make dev WORKLOAD=node: every sandbox runs the Node example against a stub model,
// and the URL the banner prints reaches it — a turn streams back from the model.
func TestDev_NodeWorkload_AnswersFromTheStubModel(t *testing.T) {
	b := testkit.Binaries(t)
	bin := filepath.Join(t.TempDir(), "dev")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// A root every workload's uid can pass through (t.TempDir's parent is root's alone).
	root, err := os.MkdirTemp("", "sandgate-dev-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-root", root, "-build", b.Dir, "-template", b.Template(), "-workload", "node",
		"-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-quiet", "-launch-delay", "0s")
	cmd.Dir = b.Root
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Error("make dev did not stop")
		}
	}()
	lines := bufio.NewScanner(stdout)
	var url, banner string
	for !strings.Contains(banner, "then send:") && lines.Scan() {
		l := lines.Text()
		banner += l + "\n"
		if _, rest, ok := strings.Cut(l, "wscat -c '"); ok {
			url = strings.TrimSuffix(rest, "'")
		}
	}
	go func() {
		for lines.Scan() {
		}
	}()
	for _, want := range []string{"the Node example (container/node-gateway)", "model API        a stub on http://127.0.0.1:", `{"type":"chat","text":"hello"}`} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner)
		}
	}
	if url == "" {
		t.Fatalf("no URL in the banner:\n%s", banner)
	}
	// A stack's very first start may miss the Connect function's deadline on a loaded
	// machine (the policy evaluator starts cold): the client is told start_failed and
	// reconnects, as the frame says.
	var c *testkit.Client
	for attempt := 1; ; attempt++ {
		c, err = testkit.DialURL(t, url)
		if err != nil {
			t.Fatal(err)
		}
		f, err := c.Await(2*time.Minute, func(f string) bool { return testkit.IsJSON("hello")(f) || testkit.IsError(f) })
		if err == nil && testkit.IsJSON("hello")(f) {
			break
		}
		if attempt == 3 {
			t.Fatalf("no hello after %d connects: %q %v", attempt, f, err)
		}
		t.Logf("connect %d: %s %v; reconnecting", attempt, f, err)
		c.Close()
	}
	c.Send(`{"type":"chat","id":"d1","text":"hello"}`)
	done := c.JSONFrame("chat.done", time.Minute)
	if done["text"] != `Turn 1. You said: "hello".` {
		t.Fatalf("chat.done %v", done)
	}
}
