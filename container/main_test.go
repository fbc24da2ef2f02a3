package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// Bad configuration is refused before anything starts: every problem named at once,
// exit status 1, and no secret value echoed.
func TestMain_BadConfiguration_EveryProblemNamed(t *testing.T) {
	out, code := testkit.Run(t, testkit.Binaries(t).Agent(), []string{
		"SANDGATE_USER_ID=user_abc",
		"SANDGATE_LEASE_TOKEN=lease-token-must-not-be-printed",
		"SANDGATE_GENERATION=zero",
		"SANDGATE_TABLE=t", "SANDGATE_BUCKET=b",
		"SANDGATE_PREFIX=users/user_someoneelse/",
		"VEND_URL=not a url",
		"LEASE_TTL=abc", "SYNC_INTERVAL=10ms", "SLEEP_AFTER=-5s", "AGENT_PORT=70000",
		"MESSAGE_RATE_LIMIT=0", "LOG_LEVEL=loud",
		"STORAGE_SECRET_ACCESS_KEY=storage-secret-must-not-be-printed",
	})
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, out)
	}
	for _, name := range []string{"SANDGATE_GENERATION", "SANDGATE_PREFIX", "VEND_URL", "RELAY_URL",
		"ECS_CONTAINER_METADATA_URI_V4", "LEASE_TTL", "SYNC_INTERVAL", "SLEEP_AFTER", "AGENT_PORT",
		"MESSAGE_RATE_LIMIT", "LOG_LEVEL", "STORAGE_ACCESS_KEY_ID"} {
		if !strings.Contains(out, name) {
			t.Errorf("output does not name %s:\n%s", name, out)
		}
	}
	for _, secret := range []string{"lease-token-must-not-be-printed", "storage-secret-must-not-be-printed"} {
		if strings.Contains(out, secret) {
			t.Errorf("output shows a secret value:\n%s", out)
		}
	}
}

func TestMain_UnknownSubcommand_Usage(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"demo", "extra"}, {"healthcheck", "-v"}} {
		out, code := testkit.Run(t, testkit.Binaries(t).Agent(), nil, args...)
		if code != 1 || !strings.Contains(out, "usage: sandgate-agent") {
			t.Errorf("%q: exit %d, output %q", args, code, out)
		}
	}
}

// The demo subcommand serves the demo workload where the agent tells it, keeps notes
// in the workspace, and exits 0 on SIGTERM.
func TestMain_Demo_ServesUntilSIGTERM(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ws := t.TempDir()
	cmd := exec.Command(testkit.Binaries(t).Agent(), "demo")
	cmd.Env = []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "SANDGATE_WORKSPACE=" + ws}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })

	var c *websocket.Conn
	testkit.Eventually(t, testkit.Wait, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, _, err = websocket.Dial(ctx, "ws://127.0.0.1:"+strconv.Itoa(port)+"/", nil)
		return err == nil
	}, func() string { return "demo never listened: " + out.String() })
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := func() map[string]any {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	if m := read(); m["type"] != "hello" {
		t.Fatalf("greeting %v", m)
	}
	c.Write(ctx, websocket.MessageText, []byte("/note kept in the workspace"))
	if m := read(); m["type"] != "note.saved" {
		t.Fatalf("reply %v", m)
	}
	files, _ := filepath.Glob(filepath.Join(ws, "notes", "*.txt"))
	if len(files) != 1 {
		t.Fatalf("note files %v", files)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("demo exited with %v\n%s", err, out.String())
		}
	case <-time.After(testkit.Wait):
		t.Fatal("demo ignored SIGTERM")
	}
}

// The binary is also the workload's launcher: started as one (by the agent, through
// /proc/self/exe), it applies the workload's limits and execs the program, which runs
// with no_new_privs, the limits and oom_score_adj 1000.
func TestMain_Launcher_AppliesLimitsThenExecs(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	out, code := testkit.Run(t, testkit.Binaries(t).Agent(), nil,
		"-sandgate-launch", "procs=64,files=128,as=0,nice=3", "--", cat, "/proc/self/status", "/proc/self/limits", "/proc/self/oom_score_adj")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^NoNewPrivs:\s+1$`),
		regexp.MustCompile(`(?m)^Max processes\s+64\s+64\s`),
		regexp.MustCompile(`(?m)^Max open files\s+128\s+128\s`),
		regexp.MustCompile(`(?m)^1000$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("the program's view lacks %s:\n%s", want, out)
		}
	}
}
