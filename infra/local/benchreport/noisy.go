package benchreport

import (
	"fmt"
	"math"
)

// The noisy neighbour (issue 19): what the template's default limits let one user
// cost, and the rates the benchmark offers.
const (
	NoisyUsers        = 50
	NoisyPhaseSeconds = 30.0
	// ConnectBurst and ConnectsPerMinute bound the connections Connect accepts of one
	// user: the burst, then one a second.
	NoisyConnectBurst      = 20
	NoisyConnectsPerMinute = 60
	// NoisyFrameRate is MessageRateLimit (burst twice that); NoisyProcesses the most
	// Message processes the local runtime runs, each with its own bucket.
	NoisyFrameRate = 20
	NoisyProcesses = 10
	// NoisyWriteSlack is how many DynamoDB writes a second the higher offered rate may
	// add over the lower one and still count as held by the limits.
	NoisyWriteSlack = 5.0
)

// NoisyRates names the two offered rates: handshakes and frames a second.
var NoisyRates = []struct {
	Name             string
	Connects, Frames float64
}{{"r1", 50, 100}, {"r2", 150, 300}}

// noisyBounds are the per-second ceilings the limits put on one user over a phase.
func noisyBounds() (accepted, agentCalls float64) {
	accepted = (NoisyConnectBurst + NoisyPhaseSeconds*NoisyConnectsPerMinute/60) / NoisyPhaseSeconds
	agentCalls = NoisyProcesses * (2*NoisyFrameRate + NoisyPhaseSeconds*NoisyFrameRate) / NoisyPhaseSeconds
	return accepted, agentCalls
}

func (r Report) noisyGoals() []Goal {
	res, ok := r.Result(RunNoisy.ID, "NoisyNeighbour")
	g := Goal{What: fmt.Sprintf("noisy neighbour: %d users beside one abusive user see 0 errors", NoisyUsers), Status: Missing}
	if ok {
		g.Measured = fmt.Sprintf("%s errors in %s cycles (alone: %s in %s)", num(res.Metrics["errors"]), num(res.Metrics["cycles"]),
			num(res.Metrics["base-errors"]), num(res.Metrics["base-cycles"]))
		g.Status = judge(res.Metrics["errors"] == 0 && res.Metrics["base-errors"] == 0 && res.Metrics["cycles"] > 0)
	}
	gs := []Goal{g}
	acc, agent := noisyBounds()
	for _, rt := range NoisyRates {
		g := Goal{What: fmt.Sprintf("noisy neighbour at %.0f handshakes/s and %.0f frames/s offered: connections accepted ≤ %.2f/s, frames at its agent ≤ %.0f/s, no throttle",
			rt.Connects, rt.Frames, acc, agent), Status: Missing}
		if ok {
			mt := res.Metrics
			g.Measured = fmt.Sprintf("%s/s accepted, %s/s at the agent, %s throttled", num(mt[rt.Name+"-accepted/s"]), num(mt[rt.Name+"-agent-calls/s"]), num(mt[rt.Name+"-throttles"]))
			g.Status = judge(mt[rt.Name+"-accepted/s"] <= acc && mt[rt.Name+"-agent-calls/s"] <= agent && mt[rt.Name+"-throttles"] == 0)
		}
		gs = append(gs, g)
	}
	g = Goal{What: fmt.Sprintf("noisy neighbour: the higher offered rate adds ≤ %.0f DynamoDB writes/s, and no execution time per handshake tried", NoisyWriteSlack), Status: Missing}
	if ok {
		mt := res.Metrics
		w1, w2 := mt["r1-ddb-writes/s"], mt["r2-ddb-writes/s"]
		// Every handshake tried is an invocation of the authorizer and of Connect, so
		// execution time grows with the rate tried; what the limits hold is its time per
		// handshake (no notice held longer, no work added).
		e1 := mt["r1-exec-s/s"] / math.Max(mt["r1-tried/s"], 1)
		e2 := mt["r2-exec-s/s"] / math.Max(mt["r2-tried/s"], 1)
		g.Measured = fmt.Sprintf("writes %s → %s /s; execution-seconds per handshake tried %s → %s", num(w1), num(w2), num(e1), num(e2))
		g.Status = judge(w2 <= w1+NoisyWriteSlack && e2 <= 1.2*e1)
	}
	gs = append(gs, g)
	g = Goal{What: "frame rate enforced in the Message process: a frame over the rate makes no agent call and no DynamoDB call", Status: Missing}
	if res, ok := r.Result(RunFrameRate.ID, "Handler_Handle_OverRate/option=message"); ok {
		g.Measured = fmt.Sprintf("%s agent calls, %s DynamoDB calls per refused frame", num(res.Metrics["agent-calls/op"]), num(res.Metrics["ddb-calls/op"]))
		g.Status = judge(res.Metrics["agent-calls/op"] == 0 && res.Metrics["ddb-calls/op"] == 0)
	}
	return append(gs, g)
}

func (r Report) noisy(m *md) {
	m.h2("Noisy neighbour")
	acc, agent := noisyBounds()
	m.p(fmt.Sprintf("Issue 19's scenario on one stack. %d users who behave — each connects with a fresh URL, waits until ready, makes five echo round trips, closes, "+
		"and again a second or more later — alone for %.0f s (the baseline), then one user alone replaying one signed URL at two offered rates "+
		"(handshakes and frames a second; half the handshakes dropped at once, a quarter before the handshake's answer), %.0f s each, "+
		"then the %d users beside the abuser at the lower rate for 60 s (at the higher one, the users' and the abuser's invocations together are more than two cores run, "+
		"and the invocations waiting for a process pass the emulated account quota: a limit of this machine, not of the design). The template's default limits: %d connects at once then %d a minute, "+
		"%d connections, %d frames a second (burst twice that), a connection closed after being refused 100 times. "+
		"Goals: the users see no error; the abuser's accepted connections (≤ %.2f/s) and frames at its agent (≤ %.0f/s: ten Message processes, each with its bucket) "+
		"are held by the limits at both rates, and the higher rate adds no more than %.0f DynamoDB writes a second.",
		NoisyUsers, NoisyPhaseSeconds, NoisyPhaseSeconds, NoisyUsers, NoisyConnectBurst, NoisyConnectsPerMinute, 20, NoisyFrameRate, acc, agent, NoisyWriteSlack))
	m.p("What the limits cannot hold here: every handshake API Gateway lets through (up to its account quota, 500 a second) invokes the authorizer and Connect once each, " +
		"and every frame the client sends invokes the Message function once, refused or not — WebSocket APIs have no per-client throttle, and WAF cannot be attached to them " +
		"(docs/DEPLOY.md, *Limits*, says what does: CloudFront and WAF rate rules keyed on the user). The refusals are cheap (a refused frame costs the Message process a few microseconds, below), " +
		"and on this machine the functions run a few hundred invocations a second in all, so the abuser's own client and the stack share the two cores: the p99s beside it are reported, not judged, " +
		"and the offered rates are what the abuser tried, not what the stack had to take (*tried*).")
	r.command(m, RunNoisy)
	res, ok := r.Result(RunNoisy.ID, "NoisyNeighbour")
	if !ok {
		return
	}
	mt := res.Metrics
	m.table([]string{"users who behave", "errors", "cycles", "connect → ready p99", "round trip p99"}, [][]string{
		{"alone", num(mt["base-errors"]), num(mt["base-cycles"]), ms(mt["base-ready-p99-ms"]), ms(mt["base-rtt-p99-ms"])},
		{"beside the abuser", num(mt["errors"]), num(mt["cycles"]), ms(mt["ready-p99-ms"]) + " (" + x(mt["x-base-ready-p99"]) + ")", ms(mt["rtt-p99-ms"]) + " (" + x(mt["x-base-rtt-p99"]) + ")"},
	})
	head := []string{"abuser, per second", "handshakes tried", "refused 429", "accepted by Connect", "frames sent", "frames at its agent",
		"authorizer invocations", "Connect invocations", "Message invocations", "execution-seconds", "peak executions (sum per function)", "DynamoDB writes", "throttled"}
	var rows [][]string
	for _, rt := range NoisyRates {
		rows = append(rows, noisyRow(fmt.Sprintf("alone, %.0f/%.0f offered", rt.Connects, rt.Frames), rt.Name, mt))
	}
	rows = append(rows, noisyRow(fmt.Sprintf("beside the users, %.0f/%.0f offered (all users' costs)", NoisyRates[0].Connects, NoisyRates[0].Frames), "mixed", mt))
	m.table(head, rows)
	m.p(fmt.Sprintf("The abuser's sandbox was started %s time(s).", num(mt["abuser-starts"])))

	m.h2("Per-user frame rate: where it is enforced")
	m.p("A frame of a user over the frame rate, two ways: refused in the Message process before anything else (what sandgate does: a token bucket per user in each process), " +
		"or left to the agent, which holds the user's exact bucket and refuses it after the Message process has found the record (cached) and called it. " +
		"Both answer the sender at most once a second. The warm path with the bucket in it is in *AWS calls per message* above.")
	r.command(m, RunFrameRate)
	var frows [][]string
	for _, opt := range []string{"message", "agent"} {
		res, ok := r.Result(RunFrameRate.ID, "Handler_Handle_OverRate/option="+opt)
		if !ok {
			continue
		}
		frows = append(frows, []string{opt, fmtNs(res.Metrics["ns/op"]), num(res.Metrics["agent-calls/op"]), num(res.Metrics["ddb-calls/op"])})
	}
	m.table([]string{"enforced in", "time per refused frame", "agent calls per frame", "DynamoDB calls per frame"}, frows)
}

func noisyRow(label, prefix string, mt map[string]float64) []string {
	v := func(k string) string { return num(mt[prefix+"-"+k]) }
	return []string{label, v("tried/s"), v("limited/s"), v("accepted/s"), v("frames/s"), v("agent-calls/s"),
		v("authorize-inv/s"), v("connect-inv/s"), v("message-inv/s"), v("exec-s/s"), v("peak-executions"), v("ddb-writes/s"), v("throttles")}
}
