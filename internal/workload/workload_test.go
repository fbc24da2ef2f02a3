package workload_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/workload"
)

// The test binary doubles as the workload and as the launcher that starts it:
// SANDGATE_TEST_WORKLOAD selects the workload's mode.
func TestMain(m *testing.M) {
	workload.RunLauncher()
	switch os.Getenv(envMode) {
	case "serve":
		serve()
		return
	case "exit":
		os.Exit(3)
	case modeAttack:
		os.Exit(attack())
	case modeOrphaner:
		os.Exit(orphaner())
	case modeLinger:
		time.Sleep(time.Hour) // until its parent-death signal, or KillOrphans
		os.Exit(0)
	case modeReaperHelper:
		os.Exit(reaperHelper())
	}
	os.Exit(m.Run())
}

const envMode = "SANDGATE_TEST_WORKLOAD"

// noExitSleep spares each process of a -race build the race runtime's second of sleep
// at exit; other builds ignore it.
const noExitSleep = "GORACE=atexit_sleep_ms=0"

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
		fmt.Fprintf(w, "%s %s", os.Getenv(workload.EnvUserID), os.Getenv(workload.EnvWorkspace))
	}))
	<-sig
	if os.Getenv("IGNORE_TERM") != "" {
		select {}
	}
	// Flush on SIGTERM, into the working directory: the agent gives the workload time
	// for exactly this.
	os.WriteFile("flushed", []byte("yes"), 0o644)
	os.Exit(0)
}

// identity is the workload's uid and gid in these tests: the default as root (as CI
// runs them), otherwise this process's own, which Start accepts without isolation.
func identity() (uid, gid uint32) {
	if os.Geteuid() == 0 {
		return workload.DefaultUID, workload.DefaultGID
	}
	return uint32(os.Geteuid()), uint32(os.Getegid())
}

// requireRoot fails a test that proves isolation: without root there is no second uid
// to isolate the workload with, and a skip would read as a pass.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test must run as root (as CI does): it starts the workload under a uid of its own")
	}
}

// workspace is a directory the workload's uid owns and can reach: t.TempDir's parent
// is private to the test's user, so it is opened for search.
func workspace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	uid, gid := identity()
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	return dir
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

// config runs this binary in mode: /proc/self/exe in the launcher is this binary too,
// so the workload's uid needs no access to the build's private directory.
func config(t *testing.T, mode string, env ...string) workload.Config {
	t.Helper()
	uid, gid := identity()
	return workload.Config{
		Command: []string{"/proc/self/exe"},
		Dir:     workspace(t),
		Host:    "127.0.0.1",
		Port:    freePort(t),
		UserID:  "user_abc",
		UID:     uid, GID: gid,
		Env: append(env, envMode+"="+mode, "PATH="+os.Getenv("PATH"), noExitSleep),
	}
}

func start(t *testing.T, cfg workload.Config) *workload.Process {
	t.Helper()
	p, err := workload.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	return p
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStart_ServesAndFlushesOnStop(t *testing.T) {
	cfg := config(t, "serve")
	p, err := workload.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := get(t, "http://"+p.Addr()), "user_abc "+cfg.Dir; got != want {
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
	var exit *workload.ExitError
	if !errors.As(err, &exit) || exit.Status.Signal() != syscall.SIGKILL {
		t.Fatalf("Stop = %v, want killed by SIGKILL", err)
	}
}

func TestStart_ExitsBeforeListening(t *testing.T) {
	_, err := workload.Start(context.Background(), config(t, "exit"))
	if !errors.Is(err, workload.ErrExited) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Start = %v, want ErrExited with exit status 3", err)
	}
}

// The launcher reports a program it cannot find as a shell does (127), and the start
// fails with it.
func TestStart_CommandNotFound(t *testing.T) {
	cfg := config(t, "serve")
	cfg.Command = []string{"/nonexistent/workload"}
	_, err := workload.Start(context.Background(), cfg)
	if !errors.Is(err, workload.ErrExited) || !strings.Contains(err.Error(), "exit status 127") {
		t.Fatalf("Start = %v, want ErrExited with exit status 127", err)
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

func TestStart_RootRefused(t *testing.T) {
	for _, ids := range [][2]uint32{{0, workload.DefaultGID}, {workload.DefaultUID, 0}} {
		cfg := config(t, "serve")
		cfg.UID, cfg.GID = ids[0], ids[1]
		if _, err := workload.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "never runs as root") {
			t.Errorf("uid %d gid %d: Start = %v, want a refusal", ids[0], ids[1], err)
		}
	}
}

// A workspace the workload's uid cannot reach is refused before anything starts, with
// the directory in the way named.
func TestStart_UnreachableWorkspace(t *testing.T) {
	requireRoot(t)
	cfg := config(t, "serve")
	private := filepath.Join(cfg.Dir, "private")
	inner := filepath.Join(private, "workspace")
	if err := os.MkdirAll(inner, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(inner, workload.DefaultUID, workload.DefaultGID); err != nil {
		t.Fatal(err)
	}
	cfg.Dir = inner
	_, err := workload.Start(context.Background(), cfg)
	var ae *workload.AccessError
	if !errors.As(err, &ae) || ae.Dir != private {
		t.Fatalf("Start = %v, want an AccessError naming %s", err, private)
	}
	if err := workload.CheckAccess(filepath.Dir(private), workload.DefaultUID, workload.DefaultGID); err != nil {
		t.Errorf("CheckAccess of the reachable parent: %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	got := workload.ParseCommand("  node /app/gateway.js   --port-from-env ")
	if len(got) != 3 || got[0] != "node" || got[2] != "--port-from-env" {
		t.Fatalf("ParseCommand = %q", got)
	}
}

func TestLimits_RoundTrip(t *testing.T) {
	l := workload.Limits{Procs: 64, Files: 256, AddressSpace: 1 << 30, Nice: 19}
	got, err := workload.ParseLimits(l.String())
	if err != nil || got != l {
		t.Fatalf("ParseLimits(%q) = %+v, %v", l.String(), got, err)
	}
	if d, _ := workload.ParseLimits(workload.Limits{}.String()); d.Procs != workload.DefaultMaxProcs || d.Files != workload.DefaultMaxFiles {
		t.Errorf("zero limits written as %+v, want the defaults", d)
	}
	for _, bad := range []string{"", "procs=1", "procs=1,files=2,as=3,nice=20", "procs=1,files=2,as=3,nice=4,x=5", "procs=-1,files=2,as=3,nice=4"} {
		if _, err := workload.ParseLimits(bad); err == nil {
			t.Errorf("ParseLimits(%q) accepted", bad)
		}
	}
}
