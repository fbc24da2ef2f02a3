package benchreport_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/benchreport"
)

func report(t *testing.T) benchreport.Report {
	t.Helper()
	run, others := parseFile(t, "testdata/run.json"), parseFile(t, "testdata/others.json")
	byRun := map[string]*benchreport.Outcome{}
	for _, id := range []string{"relay", "storm", "start", "lambda"} {
		byRun[id] = &benchreport.Outcome{Parsed: run}
	}
	byRun["warmpath"] = &benchreport.Outcome{Parsed: others}
	byRun["sync"] = &benchreport.Outcome{Parsed: others}
	byRun["others"] = &benchreport.Outcome{Parsed: others, Err: errors.New("exit status 1")}
	return benchreport.Report{
		Machine: benchreport.Machine{CPU: run.CPU, CPUs: 2, GoVersion: "go1.26.8", OS: "linux", Arch: "amd64", Commit: "abc1234",
			Date: time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)},
		Outcomes: byRun,
	}
}

// Each goal is judged on its own numbers: a relay p50 over 1.5 × direct + 1 ms fails,
// one under passes, a client count without a result is not measured; the storm and
// the start overhead against their targets.
func TestReport_Goals_Judged(t *testing.T) {
	got := map[string]benchreport.Goal{}
	for _, g := range report(t).Goals() {
		got[g.What] = g
	}
	for what, want := range map[string]benchreport.Status{
		"relay p50 ≤ 1.5 × direct p50 + 1 ms, 1 client(s)":                                             benchreport.Fail,    // 5.05 > 1.03
		"relay p50 ≤ 1.5 × direct p50 + 1 ms, 10 client(s)":                                            benchreport.Pass,    // 2.4 ≤ 2.5
		"relay p50 ≤ 1.5 × direct p50 + 1 ms, 100 client(s)":                                           benchreport.Missing, // no result
		"warm path: ≤ 1 DynamoDB read and 0 writes per frame (SDK middleware, Message handler)":        benchreport.Pass,
		"warm path on the wire, whole stack: ≤ 1 DynamoDB request and 0 writes per frame, 1 client(s)": benchreport.Pass,
		"connect storm (1000 connections, 100 users): 0 errors":                                        benchreport.Pass,
		"connect storm: exactly 100 sandboxes started":                                                 benchreport.Pass,
		"own start overhead ≤ 200 ms plus restore, empty workspace":                                    benchreport.Pass, // 89 ms
		"own start overhead ≤ 200 ms plus restore, 100MB workspace":                                    benchreport.Fail, // 263 ms
	} {
		g, ok := got[what]
		if !ok {
			t.Errorf("no goal %q", what)
			continue
		}
		if g.Status != want {
			t.Errorf("%s: %s (%s), want %s", what, g.Status, g.Measured, want)
		}
	}
}

// The document names the machine, shows every table with the command that reproduces
// it, and lists the runs that failed.
func TestRender_TablesCommandsFailures(t *testing.T) {
	var b strings.Builder
	if err := benchreport.Render(&b, report(t)); err != nil {
		t.Fatal(err)
	}
	doc := b.String()
	for _, want := range []string{
		"| 2026-11-27 06:00 UTC | Intel(R) Xeon(R) Processor (linux/amd64) | 2 | go1.26.8 | `abc1234` |",
		"```sh\ngo test -run '^$' -bench Relay_RoundTrip -benchtime 2000x -timeout 30m ./infra/local/bench/\n```",
		"| 1 | 5.05 ms | 27.6 ms | 0.0194 ms | 2.20 ms | 261× | 12.5× | 1.70 ms | 1.03 ms | **fail** |",
		"| 10 | 2.40 ms | 49.2 ms | 1 ms | 16.0 ms | 2.40× | 3.07× | 1.76 ms | 2.50 ms | pass |",
		"| Message handler (SDK middleware) | 1 | 0 | 1.05× | pass |",
		"| 0 | 100 | 100 | 100 | 11.5 s | 9.54 s | 0.336 s | 34.3× | pass |",
		"| 100MB | 670 ms | 502 ms | 104 ms (105 MB) | 368 ms | 263 ms | 1.31× | **fail** |",
		"| 4x50MB | sync | 120 MB/s | 150 MB/s | 0.8× |",
		"| authorize | 5.96 MB | 1.02× | 1.76 ms | 1.46 ms | 1.21× |",
		"| Verifier_VerifyQuery | internal/auth | 1.73 µs | 1120 B/op, 19 allocs/op, 578246 verifications/s |",
		"| Runtime_Invoke_Warm | infra/local/lambdart | 247 µs | 11.2× ÷ Baseline_LoopbackHTTP, 6184 B/op, 72 allocs/op |",
		"| Baseline_LoopbackHTTP | infra/local/lambdart | 22.1 µs | 6470 B/op, 81 allocs/op |",
		"## Failures",
		"| others | exit status 1 |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the report lacks\n%s\n\n%s", want, doc)
			break
		}
	}
}
