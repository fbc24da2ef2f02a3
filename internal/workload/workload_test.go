package workload_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/workload"
)

// The test binary doubles as the workload: SANDGATE_TEST_WORKLOAD selects a mode.
func TestMain(m *testing.M) {
	switch os.Getenv("SANDGATE_TEST_WORKLOAD") {
	case "serve":
		serve()
		return
	case "exit":
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func serve() {
	// SIGTERM is caught before the port opens: Start returns once the workload
	// listens, and a Stop right after must find the handler in place.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv(workload.EnvHost), os.Getenv(workload.EnvPort)))
	if err != nil {
		os.Exit(1)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/env" {
			fmt.Fprintf(w, "%s|%s", os.Getenv("AGENT_SECRET"), os.Getenv("AGENT_PLAIN"))
			return
		}
		fmt.Fprintf(w, "%s %s", os.Getenv(workload.EnvUserID), os.Getenv(workload.EnvWorkspace))
	}))
	<-sig
	if os.Getenv("IGNORE_TERM") != "" {
		select {}
	}
	// Flush on SIGTERM: the agent gives the workload time for exactly this.
	os.WriteFile("flushed", []byte("yes"), 0o644)
	os.Exit(0)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func config(t *testing.T, mode string, env ...string) workload.Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return workload.Config{
		Command: []string{exe},
		Dir:     t.TempDir(),
		Host:    "127.0.0.1",
		Port:    freePort(t),
		UserID:  "user_abc",
		Env:     append(env, "SANDGATE_TEST_WORKLOAD="+mode),
	}
}

func TestStart_ServesAndFlushesOnStop(t *testing.T) {
	cfg := config(t, "serve")
	p, err := workload.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var body [256]byte
	n, _ := resp.Body.Read(body[:])
	resp.Body.Close()
	if got, want := string(body[:n]), "user_abc "+cfg.Dir; got != want {
		t.Fatalf("workload saw %q, want %q", got, want)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Dir, "flushed")); err != nil || string(b) != "yes" {
		t.Fatalf("workload did not flush in its workspace: %v", err)
	}
}

func TestStop_KillsAfterGrace(t *testing.T) {
	p, err := workload.Start(context.Background(), config(t, "serve", "IGNORE_TERM=1"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Stop(300 * time.Millisecond)
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("killed before the grace period")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("Stop = %v, want an exit error", err)
	}
}

func TestStart_ExitsBeforeListening(t *testing.T) {
	_, err := workload.Start(context.Background(), config(t, "exit"))
	if !errors.Is(err, workload.ErrExited) {
		t.Fatalf("Start = %v, want ErrExited", err)
	}
}

func TestStart_NeverListens(t *testing.T) {
	cfg := config(t, "serve")
	cfg.Command = []string{"sleep", "30"}
	cfg.ReadyTimeout = 200 * time.Millisecond
	if _, err := workload.Start(context.Background(), cfg); err == nil {
		t.Fatal("Start succeeded for a workload that never listens")
	}
	cfg.Command = nil
	if _, err := workload.Start(context.Background(), cfg); err == nil {
		t.Fatal("Start succeeded with no command")
	}
}

func TestParseCommand(t *testing.T) {
	got := workload.ParseCommand("  node /app/gateway.js   --port-from-env ")
	if len(got) != 3 || got[0] != "node" || got[2] != "--port-from-env" {
		t.Fatalf("ParseCommand = %q", got)
	}
}

func TestStart_UnsetHidesAgentVariables(t *testing.T) {
	t.Setenv("AGENT_SECRET", "s3cr3t")
	t.Setenv("AGENT_PLAIN", "visible")
	cfg := config(t, "serve")
	cfg.Unset = []string{"AGENT_SECRET"}
	p, err := workload.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(5 * time.Second)
	resp, err := http.Get("http://" + p.Addr() + "/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if got := string(b); got != "|visible" {
		t.Fatalf("workload saw %q, want the secret unset and the rest inherited", got)
	}
}
