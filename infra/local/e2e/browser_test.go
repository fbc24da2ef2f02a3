package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sandgate/sandgate/infra/local/testkit"
	ops "github.com/sandgate/sandgate/internal/admin"
)

// browser returns Debian's headless Chromium; make test and .ci/run install it. A
// missing browser fails the test: it is part of what CI checks.
func browser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium-headless-shell", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: apt-get install chromium-headless-shell (make test does this)")
	return ""
}

// The demo page, in a real browser: two users side by side chat with their own
// sandboxes, and neither sees the other's notes.
func TestBrowser_DemoPageTwoUsers(t *testing.T) {
	s := testkit.Start(t, nil)
	if err := s.ServeDemoPage(quietLog()); err != nil {
		t.Fatal(err)
	}

	// No network beyond loopback: background services, updates and sync stay off.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelTimeout()

	panel := func(p, sel string) chromedp.CSS { return chromedp.CSS(`[data-panel="` + p + `"] ` + sel) }
	// waitLog waits until panel p's log contains want.
	waitLog := func(p, want string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](`document.querySelector('`+string(panel(p, ".log"))+`').textContent.includes(`+jsString(want)+`)`,
			chromedp.WithPollingTimeout(90*time.Second))
	}
	// savedShown waits until panel p says how long ago a sync stored at least one file:
	// the receipt of the sync that stored its note (a new sandbox's first marker may
	// come before it, with no file), from a saved status frame.
	savedShown := func(p string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](`(() => { const e = document.querySelector('`+string(panel(p, ".saved-ago"))+`');
			return !e.hidden && /^saved \d+ s ago$/.test(e.textContent) && /: [1-9]\d* files?,/.test(e.title); })()`,
			chromedp.WithPollingTimeout(90*time.Second))
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(s.Gateway.BaseURL()+"/"),
		chromedp.WaitVisible(panel("a", ".connect")),
		chromedp.Click(panel("a", ".connect")),
		chromedp.Click(panel("b", ".connect")),
		chromedp.WaitVisible(panel("a", `.state[data-state="ready"]`)),
		chromedp.WaitVisible(panel("b", `.state[data-state="ready"]`)),
		chromedp.SendKeys(panel("a", ".text"), "alice's private note"),
		chromedp.Click(panel("a", ".note")),
		waitLog("a", "saved note #1"),
		chromedp.SendKeys(panel("b", ".text"), "bob's own note"),
		chromedp.Click(panel("b", ".note")),
		waitLog("b", "saved note #1"),
		chromedp.Click(panel("a", ".notes")),
		waitLog("a", "notes:\n• alice's private note"),
		chromedp.Click(panel("b", ".notes")),
		waitLog("b", "notes:\n• bob's own note"),
		savedShown("a"),
		savedShown("b"),
	)
	aliceSaved, _ := chromedp.Run(ctx, chromedp.TextContent(panel("a", ".saved-ago")))
	aliceLog, _ := chromedp.Run(ctx, chromedp.TextContent(panel("a", ".log")))
	bobLog, _ := chromedp.Run(ctx, chromedp.TextContent(panel("b", ".log")))
	shot(t, ctx, "demo-two-users.png")
	if err != nil {
		t.Fatalf("browser: %v\nalice (%q): %s\nbob: %s", err, aliceSaved, aliceLog, bobLog)
	}
	if strings.Contains(aliceLog, "bob's own note") || strings.Contains(bobLog, "alice's private note") {
		t.Fatalf("a user saw the other's note\nalice: %s\nbob: %s", aliceLog, bobLog)
	}
	for _, want := range []string{"sandbox starting", "sandbox ready", "connect → ready: ", "saved: "} {
		if !strings.Contains(aliceLog, want) {
			t.Errorf("alice's log lacks %q: %s", want, aliceLog)
		}
	}

	// The operator panel (internal/admin, as make admin runs it): both sandboxes listed
	// as RUNNING; inspect shows alice's report; revoking bob closes his connection.
	row := func(user, sel string) chromedp.CSS {
		return chromedp.CSS(`.sandboxes tr[data-user="` + user + `"] ` + sel)
	}
	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(90*time.Second))
	}
	err = chromedp.Do(ctx,
		poll(`[...document.querySelectorAll('.sandboxes tr[data-user]')].filter(tr => tr.textContent.includes('RUNNING')).length === 2`),
		chromedp.Click(row("user_alice", "button.inspect")),
		poll(`document.querySelector('.report').textContent.includes('"userId": "user_alice"')`),
		chromedp.Click(row("user_bob", "button.revoke")),
		waitLog("b", "disconnected"),
		poll(`document.querySelector('.report').textContent.includes('revoke user_bob')`),
	)
	report, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(".report")))
	table, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(".sandboxes tbody")))
	listErr, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(".list-error")))
	shot(t, ctx, "demo-operator.png")
	if err != nil {
		// What the panel's endpoint answers now, asked directly, tells a slow or failing
		// list from a page that did not show it.
		lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
		began := time.Now()
		rows, lerr := s.Admin(lctx, quietLog()).List(lctx, ops.Filter{})
		lcancel()
		t.Fatalf("operator panel: %v\ntable: %s\nlist error shown: %s\nreport: %s\nlist asked directly (%s): %+v, %v",
			err, table, listErr, report, time.Since(began).Round(time.Millisecond), rows, lerr)
	}
	if nb, err := s.Store.NotBefore(context.Background(), "user_bob"); err != nil || nb.IsZero() {
		t.Fatalf("bob not revoked: %v", err)
	}
}

// shot saves a screenshot of the page in the test's artifact directory.
func shot(t *testing.T, ctx context.Context, name string) {
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}
