package benchreport_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/benchreport"
)

func parseFile(t *testing.T, path string) benchreport.Parsed {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := benchreport.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Result lines become results (name without the procs suffix, every unit), the cpu
// line is kept, failures are listed, lines that are not JSON are skipped, and a result
// line split over two events (as test2json does for benchmarks) is read whole.
func TestParse_ResultsFailuresCPU(t *testing.T) {
	p := parseFile(t, "testdata/run.json")
	if p.CPU != "Intel(R) Xeon(R) Processor" {
		t.Fatalf("cpu %q", p.CPU)
	}
	var names []string
	for _, r := range p.Results {
		names = append(names, r.Name)
	}
	want := []string{"Relay_RoundTrip/clients=1", "Relay_RoundTrip/clients=10", "ConnectStorm",
		"Start_Overhead/workspace=empty", "Start_Overhead/workspace=100MB", "Lambda_Bootstrap/authorize"}
	if !slices.Equal(names, want) {
		t.Fatalf("names %q, want %q", names, want)
	}
	r := p.Results[0]
	if r.Procs != 2 || r.N != 200 || r.Metrics["ns/op"] != 7455792 || r.Metrics["p50-ms"] != 5.052 || len(r.Metrics) != 10 {
		t.Fatalf("first result %+v", r)
	}
	if r.Package != "github.com/sandgate/sandgate/infra/local/bench" {
		t.Fatalf("package %q", r.Package)
	}
	if !slices.Equal(p.Failed, []string{"github.com/sandgate/sandgate/infra/local/bench BenchmarkBroken", "github.com/sandgate/sandgate/infra/local/bench"}) {
		t.Fatalf("failed %q", p.Failed)
	}
}

// Without GOMAXPROCS > 1 go test prints no suffix.
func TestParse_NoProcsSuffix(t *testing.T) {
	p := parseFile(t, "testdata/others.json")
	if len(p.Results) != 5 || p.Results[1].Name != "Verifier_VerifyQuery" || p.Results[1].Procs != 1 || p.Results[1].Metrics["allocs/op"] != 19 {
		t.Fatalf("results %+v", p.Results)
	}
}

// The command shown quotes what a shell would otherwise expand.
func TestRun_Command_Quoted(t *testing.T) {
	got := benchreport.RunRelay.Command()
	if want := "go test -run '^$' -bench Relay_RoundTrip -benchtime 2000x -timeout 30m ./infra/local/bench/"; got != want {
		t.Fatalf("command\n%s\nwant\n%s", got, want)
	}
	if got := benchreport.RunOthers.Command(); !strings.Contains(got, "-skip 'Relay_RoundTrip|Agent_FrameRoundTrip|") || !strings.HasSuffix(got, " ./...") {
		t.Fatalf("others: %s", got)
	}
}

// Every focused run is skipped by the catch-all run, so no benchmark runs twice.
func TestRuns_OthersSkipFocused(t *testing.T) {
	for _, r := range benchreport.Runs() {
		if r.ID == benchreport.RunOthers.ID {
			continue
		}
		if !strings.Contains("|"+benchreport.RunOthers.Skip+"|", "|"+r.Bench+"|") {
			t.Errorf("run %s (%s) is not skipped by the catch-all run", r.ID, r.Bench)
		}
	}
}
