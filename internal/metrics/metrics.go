package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// Namespace and dimension of every sandgate metric; template.yaml's alarms query these.
const (
	Namespace      = "Sandgate"
	DimensionStage = "Stage"
)

// Metric names.
const (
	// StartFailures counts sandbox starts that failed (RunTask refused, or no task).
	StartFailures = "StartFailures"
	// CapacityRefusals counts starts refused for capacity (MaxSandboxes or Fargate).
	CapacityRefusals = "CapacityRefusals"
	// LiveSandboxes is the number of live sandboxes cleanup saw.
	LiveSandboxes = "LiveSandboxes"
	// Reaped counts dead sandboxes cleanup stopped.
	Reaped = "Reaped"
	// Orphans counts tasks cleanup stopped because no live lease named them.
	Orphans = "Orphans"
	// Purged counts users whose data cleanup deleted.
	Purged = "Purged"
	// CapacityCorrections counts the capacity slots cleanup put right: slots of tasks
	// whose stop event never came, and drift of the counter from the records.
	CapacityCorrections = "CapacityCorrections"
	// PoolHits counts starts that claimed a warm pool task, PoolMisses starts that
	// found none to claim (or whose claim did not reach its task) and launched one.
	PoolHits   = "PoolHits"
	PoolMisses = "PoolMisses"
	// PoolRefills counts pool tasks the refill launched, PoolDrains those it took
	// out of the pool (too old, an older task definition, never registered).
	PoolRefills = "PoolRefills"
	PoolDrains  = "PoolDrains"
	// PoolSize is the number of pool tasks waiting to be claimed, as the refill found
	// them.
	PoolSize = "PoolSize"
)

// UnitCount is the unit of every sandgate metric.
const UnitCount = "Count"

// Value is one metric's value in a line.
type Value struct {
	Name  string
	Value float64
}

// Emitter writes EMF lines. Safe for concurrent use: each line is written whole.
type Emitter struct {
	// Now stamps each line; time.Now when nil.
	Now func() time.Time

	mu sync.Mutex
	w  io.Writer
}

// New returns an Emitter writing to w (os.Stdout in a Lambda function).
func New(w io.Writer) *Emitter { return &Emitter{w: w} }

type metricDef struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

type directive struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []metricDef `json:"Metrics"`
}

type awsMeta struct {
	Timestamp         int64       `json:"Timestamp"`
	CloudWatchMetrics []directive `json:"CloudWatchMetrics"`
}

// Emit writes one line carrying values under the Stage dimension stage. Nothing is
// written for no values. A nil Emitter emits nothing, so tests may leave it out.
func (e *Emitter) Emit(stage string, values ...Value) error {
	if e == nil || len(values) == 0 {
		return nil
	}
	if stage == "" {
		stage = "unknown"
	}
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	d := directive{Namespace: Namespace, Dimensions: [][]string{{DimensionStage}}}
	doc := map[string]any{DimensionStage: stage}
	for _, v := range values {
		if v.Name == "" || v.Name == "_aws" || v.Name == DimensionStage {
			return fmt.Errorf("emit metrics: invalid metric name %q", v.Name)
		}
		d.Metrics = append(d.Metrics, metricDef{Name: v.Name, Unit: UnitCount})
		doc[v.Name] = v.Value
	}
	doc["_aws"] = awsMeta{Timestamp: now().UnixMilli(), CloudWatchMetrics: []directive{d}}
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("emit metrics: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("emit metrics: %w", err)
	}
	return nil
}

// Count emits one metric with value 1.
func (e *Emitter) Count(stage, name string) error {
	return e.Emit(stage, Value{Name: name, Value: 1})
}

// StageOf returns the stage named by a management endpoint, its last path segment
// (https://<api>.execute-api.<region>.amazonaws.com/<stage>), for functions that get no
// API Gateway event to read it from. Empty when the endpoint has no path.
func StageOf(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	p := strings.TrimSuffix(u.Path, "/")
	if p == "" {
		return ""
	}
	return path.Base(p)
}
