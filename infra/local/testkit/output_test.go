package testkit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

const arn = "arn:aws:ecs:us-east-1:000000000000:task/sandgate-local/1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6"

// The agent's lines arrive as the stack writes them: prefixed with the task's tag and
// split across writes anywhere.
func TestOutput_WorkloadPort_FromChunkedAgentLines(t *testing.T) {
	o := testkit.NewOutput()
	text := `[task 0f0f0f0f] {"level":"INFO","msg":"workload started","userId":"user_other","port":1111,"command":"/y"}` + "\n" +
		"[MessageFunction] not json at all\n" +
		`[task 1a2b3c4d] {"level":"INFO","msg":"api listening","userId":"user_a"}` + "\n" +
		`[task 1a2b3c4d] {"level":"INFO","msg":"workload started","userId":"user_a","port":40123,"command":"/x"}` + "\n"
	for i := 0; i < len(text); i += 7 {
		o.Write([]byte(text[i:min(i+7, len(text))]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	port, err := o.WorkloadPort(ctx, arn)
	if err != nil || port != 40123 {
		t.Fatalf("port = %d, %v; want 40123", port, err)
	}
	if got := o.Lines(func(l testkit.Line) bool { return testkit.IsWorkloadStarted(l) }); len(got) != 2 || got[0].Source != "task 0f0f0f0f" {
		t.Fatalf("lines = %+v", got)
	}
	if !strings.Contains(o.Tail(1<<20), "not json at all") {
		t.Fatal("the tail lost a line that is not JSON")
	}
}

// A wait for a line that has not been written yet returns when it is.
func TestOutput_Restore_WaitsForTheLine(t *testing.T) {
	o := testkit.NewOutput()
	go func() {
		time.Sleep(20 * time.Millisecond)
		o.Write([]byte(`[task 1a2b3c4d] {"msg":"stopped","reason":"idle","files":1,"bytes":1,"durationMs":1}` + "\n"))
		o.Write([]byte(`[task 1a2b3c4d] {"msg":"restored","files":3,"bytes":300,"durationMs":42}` + "\n"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, n, err := o.Restore(ctx, arn)
	if err != nil || d != 42*time.Millisecond || n != 300 {
		t.Fatalf("restore = %s, %d bytes, %v", d, n, err)
	}
}

// No such line: the wait ends with the context, saying what it waited for.
func TestOutput_WorkloadPort_Timeout(t *testing.T) {
	o := testkit.NewOutput()
	o.Write([]byte(`[task 1a2b3c4d] {"msg":"workload started","command":"/x"}` + "\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := o.WorkloadPort(ctx, arn); err == nil || !strings.Contains(err.Error(), "without a port") {
		t.Fatalf("err = %v, want a line without a port", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := o.WorkloadPort(ctx2, "arn:aws:ecs:us-east-1:0:task/c/ffffffffffff"); err == nil {
		t.Fatal("found a port for a task that logged nothing")
	}
}

// The tail is bounded, keeping the latest output.
func TestOutput_Tail_Bounded(t *testing.T) {
	o := testkit.NewOutput()
	line := strings.Repeat("x", 1023) + "\n"
	for range 3 * testkit.DefaultTailBytes / len(line) {
		o.Write([]byte(line))
	}
	o.Write([]byte("the end\n"))
	tail := o.Tail(1 << 30)
	if len(tail) > 2*testkit.DefaultTailBytes || !strings.HasSuffix(tail, "the end\n") {
		t.Fatalf("tail of %d bytes ending %q", len(tail), tail[len(tail)-10:])
	}
}
