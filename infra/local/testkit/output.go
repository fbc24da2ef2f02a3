package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
)

// DefaultTailBytes is how much of the processes' output an Output keeps for reports.
const DefaultTailBytes = 8 << 20

// Line is one JSON log line of a process of the stack.
type Line struct {
	// Source is the tag the stack put before the line ("task 1a2b3c4d",
	// "MessageFunction", "dynamodb"); empty for the stack's own log.
	Source string
	// Msg is the line's "msg".
	Msg string
	// Fields holds every key of the line, msg included.
	Fields map[string]any
	// At is when the line was written to the Output.
	At time.Time
}

// Task reports whether the line comes from the task with taskARN.
func (l Line) Task(taskARN string) bool {
	id := path.Base(taskARN)
	return len(id) >= 8 && l.Source == "task "+id[:8]
}

// Int returns the numeric field key (JSON numbers decode as float64).
func (l Line) Int(key string) (int64, bool) {
	f, ok := l.Fields[key].(float64)
	return int64(f), ok
}

// Output is a stack's Options.Output (and Log): it keeps the last DefaultTailBytes
// for failure reports and reads the JSON log lines, so a test can learn what only a
// process knows, such as the port an agent gave its workload. Safe for concurrent use.
type Output struct {
	mu      sync.Mutex
	partial []byte
	tail    []byte
	lines   []Line
	changed chan struct{} // closed and replaced when a line arrives
}

// NewOutput returns an empty Output.
func NewOutput() *Output { return &Output{changed: make(chan struct{})} }

// Write takes output in any chunks; complete lines are parsed.
func (o *Output) Write(p []byte) (int, error) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*DefaultTailBytes {
		o.tail = append([]byte(nil), o.tail[len(o.tail)-DefaultTailBytes:]...)
	}
	o.partial = append(o.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		if l, ok := parseLine(o.partial[:i]); ok {
			l.At = now
			o.lines = append(o.lines, l)
			added = true
		}
		o.partial = o.partial[i+1:]
	}
	if added {
		close(o.changed)
		o.changed = make(chan struct{})
	}
	return len(p), nil
}

// parseLine reads "[source] {json}" or "{json}"; lines without a msg are not kept.
func parseLine(b []byte) (Line, bool) {
	var l Line
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "[") {
		src, rest, ok := strings.Cut(s[1:], "] ")
		if !ok {
			return l, false
		}
		l.Source, s = src, rest
	}
	if !strings.HasPrefix(s, "{") || json.Unmarshal([]byte(s), &l.Fields) != nil {
		return l, false
	}
	l.Msg, _ = l.Fields["msg"].(string)
	return l, l.Msg != ""
}

// Tail returns up to the last n bytes of output.
func (o *Output) Tail(n int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.tail
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return string(t)
}

// Lines returns the lines that match, oldest first.
func (o *Output) Lines(match func(Line) bool) []Line {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Line
	for _, l := range o.lines {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

// Await returns the first line that matches, waiting for it until ctx ends.
func (o *Output) Await(ctx context.Context, match func(Line) bool) (Line, error) {
	return o.AwaitAfter(ctx, 0, match)
}

// Mark returns how many lines the Output holds: AwaitAfter with it waits for a line
// written after this call.
func (o *Output) Mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lines)
}

// AwaitAfter is Await over the lines after the first mark ones (Mark).
func (o *Output) AwaitAfter(ctx context.Context, mark int, match func(Line) bool) (Line, error) {
	seen := mark
	for {
		o.mu.Lock()
		lines, changed := o.lines[seen:], o.changed
		seen = len(o.lines)
		o.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Line{}, ctx.Err()
		}
	}
}

// The agent's log keys that tests read: its lines are told apart by the fields they
// carry, not by their wording.
const (
	KeyPort     = "port"       // the workload's loopback port, with KeyCommand
	KeyCommand  = "command"    // the workload's command
	KeyFiles    = "files"      // files restored or synced
	KeyBytes    = "bytes"      // bytes restored or synced
	KeyDuration = "durationMs" // logging.Duration
	KeyReason   = "reason"     // logging.Reason: why a sandbox stops
	KeyError    = "error"      // logging.Error
	KeyLevel    = "level"
	KeyTime     = "time"
)

// Str returns the string field key.
func (l Line) Str(key string) string {
	s, _ := l.Fields[key].(string)
	return s
}

// Has reports whether the line carries every one of keys.
func (l Line) Has(keys ...string) bool {
	for _, k := range keys {
		if _, ok := l.Fields[k]; !ok {
			return false
		}
	}
	return true
}

// IsWorkloadStarted matches the agent's line that names its workload's port and command.
func IsWorkloadStarted(l Line) bool {
	port, ok := l.Int(KeyPort)
	return ok && port > 0 && l.Has(KeyCommand)
}

// IsRestored matches the agent's line that reports its restore: files, bytes and a
// duration, and no reason (the line of a stop's final sync carries one).
func IsRestored(l Line) bool {
	return l.Has(KeyFiles, KeyBytes, KeyDuration) && !l.Has(KeyReason)
}

// WorkloadPort returns the loopback port the agent of taskARN started its workload on,
// waiting for the agent to report it until ctx ends.
func (o *Output) WorkloadPort(ctx context.Context, taskARN string) (int, error) {
	l, err := o.Await(ctx, func(l Line) bool { return l.Task(taskARN) && l.Has(KeyCommand) })
	if err != nil {
		return 0, fmt.Errorf("workload port of %s: %w", taskARN, err)
	}
	if !IsWorkloadStarted(l) {
		return 0, fmt.Errorf("workload port of %s: line without a port: %v", taskARN, l.Fields)
	}
	port, _ := l.Int(KeyPort)
	return int(port), nil
}

// Restore returns how long the agent of taskARN took to restore the user's files, and
// how many bytes it brought down, waiting for the agent to report it until ctx ends.
func (o *Output) Restore(ctx context.Context, taskARN string) (time.Duration, int64, error) {
	l, err := o.Await(ctx, func(l Line) bool { return l.Task(taskARN) && IsRestored(l) })
	if err != nil {
		return 0, 0, fmt.Errorf("restore of %s: %w", taskARN, err)
	}
	ms, _ := l.Int(KeyDuration)
	bytes, _ := l.Int(KeyBytes)
	return time.Duration(ms) * time.Millisecond, bytes, nil
}
