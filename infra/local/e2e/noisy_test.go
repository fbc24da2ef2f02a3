package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// One user cannot hurt the others. One user replays one signed URL — handshakes at
// 50 a second, half of them dropped at once, and 200 frames a second (ten times its
// rate) over the connections it keeps — while four users connect, wait until ready,
// exchange frames, close and reconnect, before and during the abuse. (Every frame is a
// Lambda invocation of one of ten local processes; on a loaded machine the Message
// function runs fewer than 200 a second, so the abuser skips a frame while more than
// 100 wait, rather than build a queue Lambda would not have: make bench offers more.)
// The users who behave see no error
// at all; what the abuser gets is bounded by its limits, whatever it offers: the
// connections Connect accepts by the connect rate (burst and sustained), the frames that
// reach its agent by the frame rate of the Message processes, its sandbox started once,
// its kept connections closed for being rate limited again and again, and no function
// throttled (the account's quota is AWS's 1,000, which locally counts the invocations
// waiting for one of a function's ten processes).
// Latencies are reported, not judged: the abuser's own client shares the two cores.
func TestNoisyNeighbour_WellBehavedUnharmed(t *testing.T) {
	ddb := testkit.NewProxy(t, "")
	s := testkit.Start(t, func(o *stack.Options) {
		o.Env = map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": ddb.URL}
		o.Overrides["SLEEP_AFTER"] = "10m"
		o.Overrides["LEASE_TTL"] = "60s"
		o.Overrides["LOG_LEVEL"] = "DEBUG" // the Message function's agent calls, counted
		// Ten Message processes each count a connection's refusals: a lower threshold
		// than the template's closes within the test's few seconds.
		o.Overrides["RATE_LIMIT_CLOSE_AFTER"] = "20"
	})
	ddb.SetTarget(t, s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"])
	const (
		abuser    = "user_abuser"
		phase     = 12 * time.Second
		connects  = 50.0
		frameRate = 200.0
		// The template's defaults, which the test does not change.
		burst, perMinute, frameLimit = 20, 60, 20
	)
	users := []string{"user_good1", "user_good2", "user_good3", "user_good4"}
	for _, u := range append(users, abuser) {
		c := s.DialReady(t, u, coldStart)
		c.Close()
	}
	sign := func(u string) (string, error) { return s.SignURL(u) }
	good := &testkit.Neighbours{Sign: sign, Users: users, RoundTrips: 5, Pause: 300 * time.Millisecond}

	// The same users alone first: the baseline.
	ctx, cancel := context.WithTimeout(context.Background(), phase)
	base := good.Run(ctx)
	cancel()
	checkNeighbours(t, "alone", base)

	url, err := s.SignURL(abuser)
	if err != nil {
		t.Fatal(err)
	}
	s.Runtime.ResetStats()
	start := time.Now()
	ab := &testkit.Abuser{URL: url, ConnectRate: connects, FrameRate: frameRate, Behind: func() bool {
		st, err := s.Runtime.Stats(s.Name("MessageFunction"))
		return err == nil && st.InFlight > 100
	}}
	// The abuser keeps on until the last cycle the users started has ended.
	abCtx, abStop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ab.Run(abCtx) }()
	ctx, cancel = context.WithTimeout(context.Background(), phase)
	mixed := (&testkit.Neighbours{Sign: sign, Users: users, RoundTrips: 5, Pause: 300 * time.Millisecond}).Run(ctx)
	cancel()
	abStop()
	<-done
	elapsed := time.Since(start)
	checkNeighbours(t, "beside the abuser", mixed)

	secs := elapsed.Seconds()
	accepted := s.Connected(abuser, start)
	agent := s.AgentCalls(abuser, start)
	stats := s.LambdaStats()
	var throttles int64
	for _, st := range stats {
		throttles += st.Throttles
	}
	writes := len(ddb.Writes(start))
	t.Logf("abuser: %d handshakes tried, %d opened (%d accepted by Connect), %d refused 429, %d other, %d frames sent (%d skipped while the machine was behind), %d reached its agent, %d echoes, %d kept connections closed by the server",
		ab.Attempts.Load(), ab.Opened.Load(), accepted, ab.Limited.Load(), ab.Refused.Load(), ab.FramesSent.Load(), ab.FramesSkipped.Load(), agent, ab.Echoes.Load(), ab.ClosedByServer.Load())
	for _, id := range []string{"AuthorizeFunction", "ConnectFunction", "MessageFunction", "DisconnectFunction"} {
		st := stats[id]
		t.Logf("%s: %d invocations, peak %d in flight, %.2f execution-seconds, %d throttled", id, st.Invocations, st.Peak, st.Busy.Seconds(), st.Throttles)
	}
	t.Logf("DynamoDB writes: %d (%.0f/s); the neighbours: connect → ready p99 %s alone, %s beside; round trip p99 %s alone, %s beside",
		writes, float64(writes)/secs, p99(base.Ready), p99(mixed.Ready), p99(base.Trips), p99(mixed.Trips))

	if ab.Attempts.Load() < int64(connects*secs/2) || ab.FramesSent.Load() < int64(frameRate*secs/4) {
		t.Fatalf("the abuser offered too little to mean anything: %d handshakes, %d frames in %.0f s", ab.Attempts.Load(), ab.FramesSent.Load(), secs)
	}
	// The connect rate: the burst, then one a second (60 a minute).
	if max := burst + int(secs*perMinute/60) + 2; accepted > max {
		t.Errorf("Connect accepted %d of the abuser's connections in %.0f s; its limits allow %d", accepted, secs, max)
	}
	if ab.Limited.Load() == 0 {
		t.Error("no handshake of the abuser was refused for its rate")
	}
	// The frame rate: each Message process lets the user's rate through (twice that in
	// a burst), and the agent's refusals empty its bucket; ten processes at most.
	if max := 10 * (2*frameLimit + int(secs*frameLimit)); agent > max {
		t.Errorf("%d of the abuser's frames reached its agent in %.0f s; the frame rate allows %d", agent, secs, max)
	}
	closes := s.Output.Lines(func(l testkit.Line) bool {
		return l.Source == s.Name("MessageFunction") && l.Msg == "connection closed for the rate" && l.Str("userId") == abuser
	})
	if ab.ClosedByServer.Load() == 0 || len(closes) == 0 {
		t.Error("no connection of the abuser was closed for being rate limited again and again")
	}
	if n := len(s.RunTasks(abuser)); n != 1 {
		t.Errorf("the abuser's sandbox was started %d times", n)
	}
	if throttles != 0 {
		t.Errorf("%d invocations throttled: the abuser exhausted the account's concurrency", throttles)
	}
}

func checkNeighbours(t *testing.T, phase string, r testkit.NeighbourResults) {
	t.Helper()
	if r.Cycles < 4 {
		t.Fatalf("%s: only %d cycles of the users who behave", phase, r.Cycles)
	}
	if len(r.Errors) > 0 {
		var b strings.Builder
		for i, e := range r.Errors {
			if i == 5 {
				break
			}
			fmt.Fprintf(&b, "\n  %v", e)
		}
		t.Errorf("%s: %d errors in %d cycles of the users who behave:%s", phase, len(r.Errors), r.Cycles, b.String())
	}
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[min(len(s)-1, int(0.99*float64(len(s))+0.5)-1)].Round(time.Millisecond)
}
