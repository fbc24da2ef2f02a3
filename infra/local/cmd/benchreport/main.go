// Command benchreport runs every benchmark of make bench (go test -json, one run per
// question, see benchreport.Runs), keeps each run's raw output, and writes
// docs/BENCHMARKS.md from them. With -from-raw it only renders the kept outputs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sandgate/sandgate/infra/local/benchreport"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "docs/BENCHMARKS.md", "the report to write")
	raw := fs.String("raw", "build/bench", "directory for each run's go test -json output (<run>.json)")
	fromRaw := fs.Bool("from-raw", false, "render from the outputs kept in -raw instead of running the benchmarks")
	only := fs.String("only", "", "comma-separated runs to make ("+ids()+"); the others are read from -raw")
	fs.StringVar(&benchreport.RunOthers.Benchtime, "benchtime", benchreport.RunOthers.Benchtime, "-benchtime of the run of every other benchmark")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "benchreport: unexpected arguments %q\n", fs.Args())
		return 2
	}
	selected := map[string]bool{}
	for _, id := range strings.Split(*only, ",") {
		if id = strings.TrimSpace(id); id != "" {
			selected[id] = true
		}
	}
	for id := range selected {
		if !strings.Contains(","+ids()+",", ","+id+",") {
			fmt.Fprintf(stderr, "benchreport: no run %q (runs: %s)\n", id, ids())
			return 2
		}
	}
	if err := os.MkdirAll(*raw, 0o755); err != nil {
		fmt.Fprintln(stderr, "benchreport:", err)
		return 1
	}

	rep := benchreport.Report{Outcomes: map[string]*benchreport.Outcome{}}
	failed := false
	for _, r := range benchreport.Runs() {
		path := filepath.Join(*raw, r.ID+".json")
		o := &benchreport.Outcome{Run: r}
		if !*fromRaw && (len(selected) == 0 || selected[r.ID]) {
			fmt.Fprintf(stderr, "benchreport: %s\n", r.Command())
			start := time.Now()
			o.Err = goTest(r, path, stderr)
			o.Elapsed = time.Since(start)
			fmt.Fprintf(stderr, "benchreport: %s took %s\n", r.ID, o.Elapsed.Round(time.Second))
		}
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "benchreport: no output of run %s in %s\n", r.ID, *raw)
			continue
		}
		if err != nil {
			fmt.Fprintln(stderr, "benchreport:", err)
			return 1
		}
		o.Parsed, err = benchreport.Parse(f)
		f.Close()
		if err != nil {
			fmt.Fprintln(stderr, "benchreport:", err)
			return 1
		}
		if o.Err == nil && len(o.Failed) > 0 {
			o.Err = errors.New("go test reported failures")
		}
		failed = failed || o.Err != nil
		rep.Outcomes[r.ID] = o
		if o.CPU != "" {
			rep.Machine.CPU = o.CPU
		}
	}
	rep.Machine.CPUs, rep.Machine.GoVersion = runtime.NumCPU(), runtime.Version()
	rep.Machine.OS, rep.Machine.Arch = runtime.GOOS, runtime.GOARCH
	rep.Machine.Commit, rep.Machine.Date = commit(), time.Now()

	if err := write(*out, rep); err != nil {
		fmt.Fprintln(stderr, "benchreport:", err)
		return 1
	}
	fmt.Fprintf(stderr, "benchreport: wrote %s\n", *out)
	for _, g := range rep.Goals() {
		fmt.Fprintf(stderr, "  %-13s %s: %s\n", g.Status, g.What, g.Measured)
	}
	if failed {
		fmt.Fprintln(stderr, "benchreport: some runs failed; see the report's Failures")
		return 1
	}
	return 0
}

func ids() string {
	var out []string
	for _, r := range benchreport.Runs() {
		out = append(out, r.ID)
	}
	return strings.Join(out, ",")
}

// goTest makes one run: go test -json into path, its result lines echoed to stderr.
func goTest(r benchreport.Run, path string, stderr io.Writer) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		progress(pr, stderr)
	}()
	cmd := exec.Command("go", append([]string{"test", "-json"}, r.Args()[1:]...)...)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(f, pw), stderr
	err = cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("go test: %w", err)
	}
	return nil
}

// progress prints the result and failure lines of a go test -json stream.
func progress(r io.Reader, w io.Writer) {
	_ = benchreport.Lines(r, func(_, line string) {
		switch {
		case strings.HasPrefix(line, "Benchmark") && len(strings.Fields(line)) > 2,
			strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "panic:"):
			fmt.Fprintln(w, line)
		}
	}, nil)
	_, _ = io.Copy(io.Discard, r)
}

// commit names the checked-out commit, marked when the tree has other changes.
func commit() string {
	b, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(b))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

// write replaces the report in one rename, so a failed write leaves the old one.
func write(path string, rep benchreport.Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".benchmarks-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := benchreport.Render(tmp, rep); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
