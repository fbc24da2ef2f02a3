package metrics_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/metrics"
)

func TestEmitter_Emit_EMFLine(t *testing.T) {
	var buf bytes.Buffer
	e := metrics.New(&buf)
	e.Now = func() time.Time { return time.UnixMilli(1767225600123) }
	if err := e.Emit("prod", metrics.Value{Name: metrics.Reaped, Value: 2}, metrics.Value{Name: metrics.Orphans}); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("want exactly one line, got %q", line)
	}
	var doc struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Stage   string
		Reaped  float64
		Orphans *float64
	}
	if err := json.Unmarshal([]byte(line), &doc); err != nil {
		t.Fatal(err)
	}
	cw := doc.AWS.CloudWatchMetrics
	if doc.AWS.Timestamp != 1767225600123 || len(cw) != 1 || cw[0].Namespace != "Sandgate" ||
		len(cw[0].Dimensions) != 1 || len(cw[0].Dimensions[0]) != 1 || cw[0].Dimensions[0][0] != "Stage" {
		t.Fatalf("metadata = %+v", doc.AWS)
	}
	if len(cw[0].Metrics) != 2 || cw[0].Metrics[0].Name != "Reaped" || cw[0].Metrics[0].Unit != "Count" || cw[0].Metrics[1].Name != "Orphans" {
		t.Fatalf("metrics = %+v", cw[0].Metrics)
	}
	// A zero value is still reported: an alarm on "no data" must see it.
	if doc.Stage != "prod" || doc.Reaped != 2 || doc.Orphans == nil || *doc.Orphans != 0 {
		t.Fatalf("values = %+v", doc)
	}
}

func TestEmitter_Emit_BadInput(t *testing.T) {
	var buf bytes.Buffer
	e := metrics.New(&buf)
	for _, name := range []string{"", "_aws", "Stage"} {
		if err := e.Emit("prod", metrics.Value{Name: name, Value: 1}); err == nil {
			t.Errorf("metric name %q accepted", name)
		}
	}
	if err := e.Emit("prod"); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("refused or empty emits wrote %q", buf.String())
	}
	var nilE *metrics.Emitter
	if err := nilE.Count("prod", metrics.Purged); err != nil {
		t.Fatal(err)
	}
	// An unknown stage still yields a valid line with a dimension value.
	if err := e.Count("", metrics.StartFailures); err != nil || !strings.Contains(buf.String(), `"Stage":"unknown"`) {
		t.Fatalf("empty stage: %v %q", err, buf.String())
	}
}

func TestEmitter_Emit_ConcurrentLinesStayWhole(t *testing.T) {
	var buf bytes.Buffer
	e := metrics.New(&buf)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.Count("prod", metrics.CapacityRefusals) }()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("interleaved line %q", l)
		}
	}
}

func TestStageOf_ManagementEndpoints(t *testing.T) {
	for in, want := range map[string]string{
		"https://abc.execute-api.eu-west-1.amazonaws.com/prod":  "prod",
		"https://abc.execute-api.eu-west-1.amazonaws.com/prod/": "prod",
		"http://127.0.0.1:4510/local":                           "local",
		"http://127.0.0.1:4510":                                 "",
		"::not a url":                                           "",
	} {
		if got := metrics.StageOf(in); got != want {
			t.Errorf("StageOf(%q) = %q, want %q", in, got, want)
		}
	}
}
