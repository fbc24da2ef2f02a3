package benchreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Result is one benchmark's result line.
type Result struct {
	Package string
	// Name is the benchmark's name without "Benchmark" and the -<GOMAXPROCS> suffix,
	// for example "Relay_RoundTrip/clients=10".
	Name  string
	Procs int
	N     int64
	// Metrics maps each unit to its value: "ns/op", "B/op", and every ReportMetric.
	Metrics map[string]float64
}

// Parsed is what one go test -json stream reported.
type Parsed struct {
	Results []Result
	// Failed lists the benchmarks and packages that failed.
	Failed []string
	// CPU is the processor go test named ("cpu:" line).
	CPU string
}

var procsSuffix = regexp.MustCompile(`-(\d+)$`)

// Parse reads a go test -json stream. Lines that are not JSON (a build error printed
// by go itself) are skipped.
func Parse(r io.Reader) (Parsed, error) {
	var p Parsed
	err := Lines(r, func(pkg, line string) {
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok {
			p.CPU = cpu
		}
		if res, ok := parseLine(pkg, line); ok {
			p.Results = append(p.Results, res)
		}
	}, func(ev Event) {
		if ev.Action == "fail" {
			name := ev.Package
			if ev.Test != "" {
				name += " " + ev.Test
			}
			p.Failed = append(p.Failed, name)
		}
	})
	return p, err
}

// Event is one line of go test -json (test2json).
type Event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// Lines calls line with each complete output line of a go test -json stream and its
// package, and event (when not nil) with every event. test2json may split one line of
// output over several events (a benchmark's name is printed before it runs, its
// numbers after), so output is joined per package before it is split into lines.
func Lines(r io.Reader, line func(pkg, line string), event func(Event)) error {
	partial := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev Event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		if event != nil {
			event(ev)
		}
		if ev.Action != "output" {
			continue
		}
		text := partial[ev.Package] + ev.Output
		for {
			l, rest, ok := strings.Cut(text, "\n")
			if !ok {
				break
			}
			line(ev.Package, l)
			text = rest
		}
		partial[ev.Package] = text
	}
	for pkg, text := range partial {
		if text != "" {
			line(pkg, text)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test output: %w", err)
	}
	return nil
}

// parseLine reads "BenchmarkX-2  <N>  <value> <unit>  <value> <unit> ...".
func parseLine(pkg, line string) (Result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return Result{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Result{}, false
	}
	res := Result{Package: pkg, Name: strings.TrimPrefix(f[0], "Benchmark"), Procs: 1, N: n, Metrics: map[string]float64{}}
	if m := procsSuffix.FindStringSubmatch(res.Name); m != nil {
		res.Procs, _ = strconv.Atoi(m[1])
		res.Name = strings.TrimSuffix(res.Name, m[0])
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Result{}, false
		}
		res.Metrics[f[i+1]] = v
	}
	return res, true
}
