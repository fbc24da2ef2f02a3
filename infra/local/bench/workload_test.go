package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
)

// BenchmarkWorkload_ConnectReady compares a client's connect → ready with the Node
// example (container/node-gateway, under node) as the workload against the built-in Go
// demo, on one stack in the same run, alternately: each sandbox runs a script that
// starts the Node gateway for users named user_node… and the demo for the others, so
// both pay the same script. *Own* is connect → ready less the emulated launch (as ECS
// reports it); *workload start* is the agent's restore's end to its workload accepting
// connections (the launcher and the program's own start), from the agent's log lines.
//
//	go test -run '^$' -bench Workload_ConnectReady -benchtime 5x ./infra/local/bench/
func BenchmarkWorkload_ConnectReady(b *testing.B) {
	model := testkit.StartModelStub(b)
	node := testkit.NodeGateway(b)
	dir, err := os.MkdirTemp("", "sandgate-bench-workload-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	script := filepath.Join(dir, "pick.sh")
	body := fmt.Sprintf("#!/bin/sh\ncase \"$SANDGATE_USER_ID\" in\n  user_node*) exec %s ;;\n  *) exec %s demo ;;\nesac\n", node, testkit.Binaries(b).Agent())
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	s := testkit.Start(b, func(o *stack.Options) {
		o.LaunchDelay = launchDelay
		o.Overrides["SLEEP_AFTER"] = "10m"
		o.Overrides["SYNC_INTERVAL"] = "30s"
		o.Overrides["SANDBOX_COMMAND"] = script
		model.Deploy(o)
	})
	runs := 0
	b.Run("demo-vs-node", func(b *testing.B) {
		var demo, nodeSt workloadStats
		for range b.N {
			runs++
			if runs%2 == 0 {
				demo.add(measureWorkload(b, s, fmt.Sprintf("user_demo%d", runs)))
				nodeSt.add(measureWorkload(b, s, fmt.Sprintf("user_node%d", runs)))
			} else {
				nodeSt.add(measureWorkload(b, s, fmt.Sprintf("user_node%d", runs)))
				demo.add(measureWorkload(b, s, fmt.Sprintf("user_demo%d", runs)))
			}
		}
		demo.report(b, "demo")
		nodeSt.report(b, "node")
		b.ReportMetric(ms(quantile(nodeSt.own, 0.5))/ms(quantile(demo.own, 0.5)), "x-demo-own")
		b.ReportMetric(ms(quantile(nodeSt.start, 0.5))/ms(quantile(demo.start, 0.5)), "x-demo-workload-start")
	})
}

type workloadSample struct{ total, launch, start time.Duration }

type workloadStats struct{ total, own, start []time.Duration }

func (st *workloadStats) add(x workloadSample) {
	st.total = append(st.total, x.total)
	st.own = append(st.own, x.total-x.launch)
	st.start = append(st.start, x.start)
}

func (st *workloadStats) report(b *testing.B, name string) {
	b.ReportMetric(ms(quantile(st.total, 0.5)), name+"-connect-ready-ms")
	b.ReportMetric(ms(quantile(st.own, 0.5)), name+"-own-ms")
	b.ReportMetric(ms(quantile(st.start, 0.5)), name+"-workload-start-ms")
}

// measureWorkload connects as a new user, waits for ready and the workload's greeting
// (the Node gateway's hello, or the demo's), takes the launch and the workload's start,
// then stops the sandbox.
func measureWorkload(b *testing.B, s *testkit.Stack, user string) workloadSample {
	b.Helper()
	b.StartTimer()
	t0 := time.Now()
	c := s.Dial(b, user)
	c.Status(frames.Ready, coldStart)
	total := time.Since(t0)
	b.StopTimer()
	var hello map[string]any
	_ = json.Unmarshal([]byte(c.Next(reply, "the workload's greeting", testkit.IsJSON("hello"))), &hello)
	// The Node gateway's hello names the user, the demo's says how to use it: the
	// script started the workload the user's name asked for.
	if isNode := strings.HasPrefix(user, "user_node"); (isNode && hello["user"] != user) || (!isNode && hello["help"] == nil) {
		b.Fatalf("%s was greeted %v", user, hello)
	}
	sb := s.Running(b, user, reply)
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	start, err := s.Output.WorkloadStart(ctx, sb.TaskARN)
	if err != nil {
		b.Fatal(err)
	}
	x := workloadSample{total: total, launch: launch(b, s, sb.TaskARN), start: start}
	c.Close()
	stopTask(b, s, sb.TaskARN)
	s.Stopped(b, user, coldStart)
	return x
}
