package benchreport

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Outcome is what one run produced.
type Outcome struct {
	Run Run
	Parsed
	// Err says why the run did not complete (go test failed), or is nil.
	Err     error
	Elapsed time.Duration
}

// Machine says where and when the runs happened.
type Machine struct {
	CPU       string // as go test names it
	CPUs      int
	GoVersion string
	OS, Arch  string
	Commit    string
	Date      time.Time
}

// Report is a set of outcomes, by run ID, and the machine.
type Report struct {
	Machine  Machine
	Outcomes map[string]*Outcome
}

// Result returns the result named name of run id.
func (r Report) Result(id, name string) (Result, bool) {
	o := r.Outcomes[id]
	if o == nil {
		return Result{}, false
	}
	for _, res := range o.Results {
		if res.Name == name {
			return res, true
		}
	}
	return Result{}, false
}

// Status of a goal.
type Status string

const (
	Pass    Status = "pass"
	Fail    Status = "**fail**"
	Missing Status = "not measured"
)

// Goal is one target of the issue, judged on the run's results.
type Goal struct {
	What     string
	Measured string
	Status   Status
}

func judge(ok bool) Status {
	if ok {
		return Pass
	}
	return Fail
}

// Goal values of the issue.
const (
	RelayFactor      = 1.5 // relay p50 ≤ RelayFactor × direct p50 + RelayExtraMs
	RelayExtraMs     = 1.0
	StormConnections = 1000
	StormUsers       = 100
	StartBudgetMs    = 200.0 // own start overhead, restore excluded
	PoolHitBudgetMs  = 300.0 // a pool hit's connect → ready less its restore, at p95
	PoolStormUsers   = 100
	PoolStormSize    = 20
)

// RelayClients are the client counts of the relay benchmark.
var RelayClients = []int{1, 10, 100}

// StartWorkspaces are the sub-benchmarks of the start overhead benchmark.
var StartWorkspaces = []string{"empty", "100MB"}

// Goals judges every goal.
func (r Report) Goals() []Goal {
	var gs []Goal
	for _, n := range RelayClients {
		g := Goal{What: fmt.Sprintf("relay p50 ≤ %.1f × direct p50 + %.0f ms, %d client(s)", RelayFactor, RelayExtraMs, n), Status: Missing}
		if res, ok := r.Result(RunRelay.ID, fmt.Sprintf("Relay_RoundTrip/clients=%d", n)); ok {
			p50, d50 := res.Metrics["p50-ms"], res.Metrics["direct-p50-ms"]
			budget := RelayFactor*d50 + RelayExtraMs
			g.Measured = fmt.Sprintf("%s ms (budget %s ms)", num(p50), num(budget))
			g.Status = judge(p50 <= budget)
		}
		gs = append(gs, g)
	}
	g := Goal{What: "warm path: ≤ 1 DynamoDB read and 0 writes per frame (SDK middleware, Message handler)", Status: Missing}
	if res, ok := r.Result(RunWarm.ID, "Handler_Handle_WarmPath"); ok {
		c, w := res.Metrics["ddb-calls/op"], res.Metrics["ddb-writes/op"]
		g.Measured = fmt.Sprintf("%s calls, %s writes", num(c), num(w))
		g.Status = judge(c <= 1 && w == 0)
	}
	gs = append(gs, g)
	for _, n := range RelayClients {
		g := Goal{What: fmt.Sprintf("warm path on the wire, whole stack: ≤ 1 DynamoDB request and 0 writes per frame, %d client(s)", n), Status: Missing}
		if res, ok := r.Result(RunRelay.ID, fmt.Sprintf("Relay_RoundTrip/clients=%d", n)); ok {
			c, w := res.Metrics["ddb-calls/frame"], res.Metrics["ddb-writes/frame"]
			g.Measured = fmt.Sprintf("%s requests, %s writes", num(c), num(w))
			g.Status = judge(c <= 1 && w == 0)
		}
		gs = append(gs, g)
	}
	storm, ok := r.Result(RunStorm.ID, "ConnectStorm")
	g = Goal{What: fmt.Sprintf("connect storm (%d connections, %d users): 0 errors", StormConnections, StormUsers), Status: Missing}
	if ok {
		g.Measured = num(storm.Metrics["errors"])
		g.Status = judge(storm.Metrics["errors"] == 0)
	}
	gs = append(gs, g)
	g = Goal{What: fmt.Sprintf("connect storm: exactly %d sandboxes started", StormUsers), Status: Missing}
	if ok {
		g.Measured = num(storm.Metrics["sandboxes"])
		g.Status = judge(storm.Metrics["sandboxes"] == StormUsers)
	}
	gs = append(gs, g)
	for _, ws := range StartWorkspaces {
		g := Goal{What: fmt.Sprintf("own start overhead ≤ %.0f ms plus restore, %s workspace", StartBudgetMs, ws), Status: Missing}
		if res, ok := r.Result(RunStart.ID, "Start_Overhead/workspace="+ws); ok {
			own := res.Metrics["own-excl-restore-ms"]
			g.Measured = fmt.Sprintf("%s ms + %s ms restore", num(own), num(res.Metrics["restore-ms"]))
			g.Status = judge(own <= StartBudgetMs)
		}
		gs = append(gs, g)
	}
	for _, ws := range StartWorkspaces {
		g := Goal{What: fmt.Sprintf("pool hit: connect → ready ≤ %.0f ms plus restore at p95, %s workspace, emulated 30 s launch", PoolHitBudgetMs, ws), Status: Missing}
		if res, ok := r.Result(RunPool.ID, "Pool_ConnectReady/hit/workspace="+ws); ok {
			own := res.Metrics["own-p95-ms"]
			g.Measured = fmt.Sprintf("%s ms + restore (p95 %s ms total)", num(own), num(res.Metrics["p95-ms"]))
			g.Status = judge(own <= PoolHitBudgetMs)
		}
		gs = append(gs, g)
	}
	g = Goal{What: fmt.Sprintf("pool storm (%d users, pool of %d): every user served, exactly %d sandboxes, counter exact", PoolStormUsers, PoolStormSize, PoolStormUsers), Status: Missing}
	if res, ok := r.Result(RunPool.ID, "Pool_Storm"); ok {
		mt := res.Metrics
		g.Measured = fmt.Sprintf("%s errors, %s sandboxes, counter %s", num(mt["errors"]), num(mt["sandboxes"]), num(mt["capacity"]))
		g.Status = judge(mt["errors"] == 0 && mt["sandboxes"] == PoolStormUsers && mt["capacity"] == PoolStormUsers+PoolStormSize)
	}
	gs = append(gs, g)
	gs = append(gs, r.noisyGoals()...)
	gs = append(gs, r.cleanupGoals()...)
	g = Goal{What: fmt.Sprintf("backup pass: a user whose prefix did not change costs ≤ %.0f requests", float64(BackupUnchangedRequests)), Status: Missing}
	if res, ok := r.Result(RunBackup.ID, "Backup_Pass"); ok {
		n := res.Metrics["unchanged-req/user"]
		g.Measured = num(n) + " requests per user (the pass's lock and sweep check included)"
		g.Status = judge(n <= BackupUnchangedRequests)
	}
	gs = append(gs, g)
	return append(gs, r.recoveryGoals()...)
}

// BackupUnchangedRequests is the backup step's budget for a user with nothing new:
// the marker read and the manifests listed, plus the pass's own lock and sweep check
// shared among its users.
const BackupUnchangedRequests = 3.0

// num formats a measurement with three significant digits or so.
func num(v float64) string {
	switch a := math.Abs(v); {
	case v == math.Trunc(v) && a < 1e6:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// Render writes the report as Markdown.
func Render(w io.Writer, r Report) error {
	m := &md{}
	m.p("# Benchmarks")
	m.p("Generated by `make bench` (`go run ./infra/local/cmd/benchreport`): every number comes from one run on one machine, " +
		"and every comparison is against a baseline measured in the same run, so the ratios carry over to other machines and the absolute times do not. " +
		"Reproduce a table with the command above it.")
	mc := r.Machine
	m.table([]string{"date", "machine", "CPUs", "Go", "commit"},
		[][]string{{mc.Date.UTC().Format("2006-01-02 15:04 MST"), mc.CPU + " (" + mc.OS + "/" + mc.Arch + ")", fmt.Sprint(mc.CPUs), mc.GoVersion, "`" + mc.Commit + "`"}})

	m.h2("Goals")
	var rows [][]string
	for _, g := range r.Goals() {
		rows = append(rows, []string{g.What, g.Measured, string(g.Status)})
	}
	m.table([]string{"goal", "measured", "result"}, rows)

	r.relay(m)
	r.calls(m)
	r.storm(m)
	r.start(m)
	r.pool(m)
	r.noisy(m)
	r.workload(m)
	r.recovery(m)
	r.sync(m)
	r.cleanupReads(m)
	r.backup(m)
	r.lambda(m)
	r.others(m)
	r.failures(m)
	_, err := io.WriteString(w, m.String())
	return err
}

func (r Report) command(m *md, runs ...Run) {
	for _, run := range runs {
		m.p("```sh\n" + run.Command() + "\n```")
		if o := r.Outcomes[run.ID]; o == nil {
			m.p("_Not run._")
		} else if o.Err != nil {
			m.p(fmt.Sprintf("_Did not complete: %v (see Failures)._", o.Err))
		}
	}
}

func ms(v float64) string { return num(v) + " ms" }
func x(v float64) string  { return num(v) + "×" }

func (r Report) relay(m *md) {
	m.h2("Relay round trip")
	m.p(fmt.Sprintf("A frame's round trip through the local stack — client → API Gateway emulator → Message function (a real `bootstrap` process) → agent → the workload's echo → management API → client — "+
		"with every client of one user sending its next frame after the previous echo, against the same echo from the same workload process over a direct WebSocket, "+
		"measured with as many clients and frames, alternately in four rounds. Goal: p50 within %.1f × the direct p50 + %.0f ms. "+
		"*GetItem alone* is the DynamoDB read the path makes when a Message process does not hold the user's record yet, made directly against the same emulator in the same rounds.", RelayFactor, RelayExtraMs))
	m.p("The relay path holds, by design, at most one DynamoDB read (none while the Message process holds the user's running record, for up to 5 s), " +
		"one Lambda invocation through the Runtime API (the hand-over to a waiting process and its response), " +
		"an HTTP POST to the agent, the agent's WebSocket to the workload and a SigV4-signed management API post back; the direct echo holds none of them. " +
		"Beyond one client, every process of the path — gateway, runtime, function, agent, workload, DynamoDB Local — and the clients share this machine's cores, " +
		"so the relay is bound by CPU: its p50 grows with the number of clients at a nearly constant time per frame, while the direct echo is one process. " +
		"In AWS these run on separate machines; the multi-client rows say what one small machine sustains, not what the design costs per frame.")
	r.command(m, RunRelay)
	var rows [][]string
	for _, n := range RelayClients {
		res, ok := r.Result(RunRelay.ID, fmt.Sprintf("Relay_RoundTrip/clients=%d", n))
		if !ok {
			continue
		}
		mt := res.Metrics
		budget := RelayFactor*mt["direct-p50-ms"] + RelayExtraMs
		rows = append(rows, []string{fmt.Sprint(n), ms(mt["p50-ms"]), ms(mt["p99-ms"]), ms(mt["direct-p50-ms"]), ms(mt["direct-p99-ms"]),
			x(mt["x-direct-p50"]), x(mt["x-direct-p99"]), ms(mt["getitem-p50-ms"]), ms(budget), string(judge(mt["p50-ms"] <= budget))})
	}
	m.table([]string{"clients", "p50", "p99", "direct p50", "direct p99", "p50 ÷ direct", "p99 ÷ direct", "GetItem alone p50", "budget", "goal"}, rows)
	m.p("The agent's share alone, in process (its HTTP API, the upstream WebSocket to the workload, the management API post), against the same direct echo:")
	r.command(m, RunAgent)
	rows = nil
	for _, res := range r.results(RunAgent.ID, "Agent_FrameRoundTrip/") {
		rows = append(rows, []string{strings.TrimPrefix(res.Name, "Agent_FrameRoundTrip/"), x(res.Metrics["x-direct"])})
	}
	m.table([]string{"frame", "agent ÷ direct"}, rows)
}

func (r Report) calls(m *md) {
	m.h2("AWS calls per message (warm path)")
	m.p("Counted two ways. In process, by SDK middleware (`infra/local/testkit`) on the Message handler's DynamoDB client, per frame, with the handler's time against a same-run baseline of the same GetItem and POST made directly. " +
		"On the wire, every DynamoDB request any process of the stack made (functions and agents, SDK retries included) during the relay benchmark above, per frame. Goal: at most one read and no write per frame.")
	r.command(m, RunWarm)
	var rows [][]string
	if res, ok := r.Result(RunWarm.ID, "Handler_Handle_WarmPath"); ok {
		c, w := res.Metrics["ddb-calls/op"], res.Metrics["ddb-writes/op"]
		rows = append(rows, []string{"Message handler (SDK middleware)", num(c), num(w), x(res.Metrics["x-baseline"]), string(judge(c <= 1 && w == 0))})
	}
	for _, n := range RelayClients {
		if res, ok := r.Result(RunRelay.ID, fmt.Sprintf("Relay_RoundTrip/clients=%d", n)); ok {
			c, w := res.Metrics["ddb-calls/frame"], res.Metrics["ddb-writes/frame"]
			rows = append(rows, []string{fmt.Sprintf("whole stack, %d client(s) (wire)", n), num(c), num(w), "—", string(judge(c <= 1 && w == 0))})
		}
	}
	m.table([]string{"counted", "DynamoDB calls per frame", "writes per frame", "time ÷ baseline", "goal"}, rows)
}

func (r Report) storm(m *md) {
	m.h2("Connect storm")
	m.p(fmt.Sprintf("%d WebSocket connections for %d users opened at once on a fresh stack whose capacity is exactly %d sandboxes, each waiting until it is told its sandbox is ready. "+
		"*Errors* counts refused handshakes, error frames and clients never told; *sandboxes started* counts RunTask leases. "+
		"The baseline is one user's connect → ready alone on the same stack just before. Goals: 0 errors, exactly %d sandboxes.", StormConnections, StormUsers, StormUsers, StormUsers))
	r.command(m, RunStorm)
	res, ok := r.Result(RunStorm.ID, "ConnectStorm")
	if !ok {
		return
	}
	mt := res.Metrics
	m.table([]string{"errors", "sandboxes started", "tasks running", "capacity counter", "all ready", "median ready", "one user alone", "all ÷ alone", "goals"},
		[][]string{{num(mt["errors"]), num(mt["sandboxes"]), num(mt["tasks"]), num(mt["capacity"]),
			num(mt["all-ready-s"]) + " s", num(mt["p50-ready-s"]) + " s", num(mt["single-ready-s"]) + " s", x(mt["x-single"]),
			string(judge(mt["errors"] == 0 && mt["sandboxes"] == StormUsers))}})
}

func (r Report) start(m *md) {
	m.h2("Own start overhead")
	m.p(fmt.Sprintf("A client's connect → ready, less the emulated Fargate launch as ECS reports it for the same task (createdAt → startedAt), "+
		"is what sandgate itself adds: the handshake, the lease and RunTask, the agent's start, the restore, the workload's start, ready and the frame. "+
		"The restore is timed by the agent itself; the rest must stay within %.0f ms. Medians of the iterations; the functions' processes are warm, "+
		"since go test does not report its first, single-iteration run, where they (and the emulators) start cold.", StartBudgetMs))
	r.command(m, RunStart)
	var rows [][]string
	for _, ws := range StartWorkspaces {
		res, ok := r.Result(RunStart.ID, "Start_Overhead/workspace="+ws)
		if !ok {
			continue
		}
		mt := res.Metrics
		rows = append(rows, []string{ws, ms(mt["connect-ready-ms"]), ms(mt["launch-ms"]), ms(mt["restore-ms"]) + " (" + num(mt["restored-MB"]) + " MB)",
			ms(mt["own-ms"]), ms(mt["own-excl-restore-ms"]), x(mt["own-excl-restore-ms"] / StartBudgetMs), string(judge(mt["own-excl-restore-ms"] <= StartBudgetMs))})
	}
	m.table([]string{"workspace", "connect → ready", "emulated launch", "restore", "own (total − launch)", "own excluding restore", "÷ budget", "goal"}, rows)
}

func (r Report) pool(m *md) {
	m.h2("Warm pool")
	m.p(fmt.Sprintf("A client's connect → ready when its start claims a waiting pool task (*hit*) against one that launches its own (*miss*, on a stack without a pool), "+
		"at an emulated Fargate launch of 30 s, sequentially, each start of a sandbox stopped before. A hit's path holds the claim's transaction, the hand-over to the "+
		"waiting agent, the agent's call to the credential vendor (a function URL and its AssumeRole), the lease's check, the restore, the workload's start and ready; "+
		"the pool refills in the background meanwhile. *Own* is each start's connect → ready less its own restore (timed by its agent). Goal: a hit's own p95 ≤ %.0f ms.", PoolHitBudgetMs))
	r.command(m, RunPool)
	var rows [][]string
	for _, kind := range []string{"hit", "miss"} {
		for _, ws := range StartWorkspaces {
			res, ok := r.Result(RunPool.ID, "Pool_ConnectReady/"+kind+"/workspace="+ws)
			if !ok {
				continue
			}
			mt := res.Metrics
			goal := "—"
			if kind == "hit" {
				goal = string(judge(mt["own-p95-ms"] <= PoolHitBudgetMs))
			}
			rows = append(rows, []string{kind, ws, num(mt["starts"]), ms(mt["p50-ms"]), ms(mt["p95-ms"]),
				ms(mt["restore-p50-ms"]) + " / " + ms(mt["restore-p95-ms"]), ms(mt["own-p50-ms"]) + " / " + ms(mt["own-p95-ms"]), goal})
		}
	}
	m.table([]string{"start", "workspace", "starts", "connect → ready p50", "p95", "restore p50 / p95", "own p50 / p95", "goal"}, rows)
	res, ok := r.Result(RunPool.ID, "Pool_Storm")
	if !ok {
		return
	}
	m.p(fmt.Sprintf("The storm: %d users connect at once against a full pool of %d, at the same 30 s launch, under ECS's rates as the local stack enforces them "+
		"(RunTask 20 calls a second; Fargate 100 launches in a burst, 20 a second). *Sandboxes* are the distinct tasks the users' records name (no task serves two); "+
		"*misses* the users' own launches (distinct leases); *throttled* the RunTask calls ECS refused for its rate (each tried again); *pool refilled* when %d tasks "+
		"waited again; the counter is checked against the records and pool items once all settled (%d + %d).",
		PoolStormUsers, PoolStormSize, PoolStormSize, PoolStormUsers, PoolStormSize))
	mt := res.Metrics
	m.table([]string{"errors", "sandboxes", "hits", "misses", "throttled", "all ready", "pool refilled", "capacity counter", "goals"},
		[][]string{{num(mt["errors"]), num(mt["sandboxes"]), num(mt["hits"]), num(mt["misses"]), num(mt["throttled"]),
			num(mt["all-ready-s"]) + " s", num(mt["pool-refilled-s"]) + " s", num(mt["capacity"]),
			string(judge(mt["errors"] == 0 && mt["sandboxes"] == PoolStormUsers && mt["capacity"] == PoolStormUsers+PoolStormSize))}})
}

func (r Report) sync(m *md) {
	m.h2("Restore and sync throughput")
	m.p("`internal/objsync` against rclone (same parallelism) on the same S3 endpoint (gofakes3) and the same files, alternately in each iteration. No goal was set; the ratio is the measure.")
	r.command(m, RunSync)
	var rows [][]string
	for _, res := range r.results(RunSync.ID, "Throughput/") {
		parts := strings.Split(strings.TrimPrefix(res.Name, "Throughput/"), "/")
		if len(parts) != 2 {
			continue
		}
		mt := res.Metrics
		rows = append(rows, []string{parts[0], parts[1], num(mt["sandgate-MB/s"]) + " MB/s", num(mt["rclone-MB/s"]) + " MB/s", x(mt["ratio"])})
	}
	m.table([]string{"data", "operation", "sandgate", "rclone", "sandgate ÷ rclone"}, rows)
}

func (r Report) backup(m *md) {
	m.h2("Backups")
	m.p(fmt.Sprintf("The cleanup pass's backup step (`internal/backup`) over %s users of %s files of 64 KiB each on s3local (gofakes3, in memory), through the production S3 client: "+
		"the first pass (every file new to the backups: a look at each object, a look at each content, a server-side copy each), a pass with nothing changed, a pass after one file per user changed; "+
		"against, in the same iterations and with the same 16 requests in flight, the same objects copied by CopyObject alone and by GET and PUT through the process. "+
		"gofakes3 copies by reading and writing the object in its own process, so the copies it serves cost it what GET and PUT do; on S3 and R2 a copy moves no byte through the caller. "+
		"Requests are counted by the pass (S3 bills a LIST, PUT and COPY at the PUT rate, a GET and HEAD at the GET rate).", "10", "50"))
	r.command(m, RunBackup)
	res, ok := r.Result(RunBackup.ID, "Backup_Pass")
	if !ok {
		return
	}
	mt := res.Metrics
	m.table([]string{"pass", "objects/s", "MB/s", "requests per user", "time per user"}, [][]string{
		{"first (all 500 files copied)", num(mt["objects/s"]), num(mt["MB/s"]), num(mt["first-req/user"]), ms(50 * 1000 / mt["objects/s"])},
		{"nothing changed", "-", "-", num(mt["unchanged-req/user"]), ms(mt["unchanged-ms/user"])},
		{"one file changed per user", "-", "-", num(mt["changed-req/user"]), ms(mt["changed-ms/user"])},
	})
	m.table([]string{"same objects by", "objects/s", "first backup pass ÷ it"}, [][]string{
		{"CopyObject alone", num(mt["copy-objects/s"]), x(mt["x-copy"])},
		{"GET and PUT through the process", num(mt["getput-objects/s"]), x(mt["x-getput"])},
	})
}

func (r Report) lambda(m *md) {
	m.h2("Lambda bootstrap size and init")
	m.p("Each function's `bootstrap` as `make build-aws` builds it for Lambda (linux/arm64, `-tags lambda.norpc`, stripped), and its init — process start to its first request to the Runtime API, Lambda's Init Duration — " +
		"for this machine's native build under the local Lambda runtime, both against the smallest Go Lambda (aws-lambda-go and an echo handler) built and started the same way, alternately, in the same run. Init is the median.")
	r.command(m, RunLambda)
	var rows [][]string
	for _, res := range r.results(RunLambda.ID, "Lambda_Bootstrap/") {
		mt := res.Metrics
		rows = append(rows, []string{strings.TrimPrefix(res.Name, "Lambda_Bootstrap/"), num(mt["size-MB"]) + " MB", x(mt["x-minimal-size"]),
			ms(mt["init-ms"]), ms(mt["minimal-init-ms"]), x(mt["x-minimal-init"])})
	}
	m.table([]string{"function", "bootstrap", "÷ minimal", "init", "minimal init", "÷ minimal"}, rows)
}

func (r Report) others(m *md) {
	m.h2("Every other benchmark")
	m.p("For the record; most report their own same-run baseline (`x-…` is a multiple of it), and a package's `Baseline_…` benchmark is the baseline of the others beside it (`÷ Baseline_…`). Time per operation is for this machine only.")
	r.command(m, RunOthers)
	o := r.Outcomes[RunOthers.ID]
	if o == nil {
		return
	}
	base := map[string]Result{}
	for _, res := range o.Results {
		if strings.HasPrefix(res.Name, "Baseline_") {
			base[res.Package] = res
		}
	}
	var rows [][]string
	for _, res := range o.Results {
		var extra []string
		if b, ok := base[res.Package]; ok && b.Name != res.Name && b.Metrics["ns/op"] > 0 {
			extra = append(extra, x(res.Metrics["ns/op"]/b.Metrics["ns/op"])+" ÷ "+b.Name)
		}
		for _, u := range sortedUnits(res.Metrics) {
			if u != "ns/op" {
				extra = append(extra, num(res.Metrics[u])+" "+u)
			}
		}
		pkg := strings.TrimPrefix(res.Package, "github.com/sandgate/sandgate/")
		rows = append(rows, []string{res.Name, pkg, fmtNs(res.Metrics["ns/op"]), strings.Join(extra, ", ")})
	}
	m.table([]string{"benchmark", "package", "time/op", "reported"}, rows)
}

func (r Report) failures(m *md) {
	var rows [][]string
	for _, run := range Runs() {
		o := r.Outcomes[run.ID]
		if o == nil || (o.Err == nil && len(o.Failed) == 0) {
			continue
		}
		why := o.Failed
		if o.Err != nil {
			why = append([]string{o.Err.Error()}, why...)
		}
		rows = append(rows, []string{run.ID, strings.Join(why, "; ")})
	}
	if len(rows) == 0 {
		return
	}
	m.h2("Failures")
	m.p("Runs that did not complete; their raw output is in `build/bench/<run>.json`.")
	m.table([]string{"run", "what failed"}, rows)
}

// results returns run id's results whose name starts with prefix, in output order.
func (r Report) results(id, prefix string) []Result {
	o := r.Outcomes[id]
	if o == nil {
		return nil
	}
	var out []Result
	for _, res := range o.Results {
		if strings.HasPrefix(res.Name, prefix) {
			out = append(out, res)
		}
	}
	return out
}

func sortedUnits(m map[string]float64) []string {
	us := make([]string, 0, len(m))
	for u := range m {
		us = append(us, u)
	}
	sort.Strings(us)
	return us
}

func fmtNs(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return num(d.Seconds()) + " s"
	case d >= time.Millisecond:
		return num(ns/1e6) + " ms"
	case d >= time.Microsecond:
		return num(ns/1e3) + " µs"
	}
	return num(ns) + " ns"
}

// md builds Markdown.
type md struct{ strings.Builder }

func (m *md) p(s string)  { m.WriteString(s + "\n\n") }
func (m *md) h2(s string) { m.WriteString("## " + s + "\n\n") }

func (m *md) table(head []string, rows [][]string) {
	if len(rows) == 0 {
		m.p("_No results._")
		return
	}
	m.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		m.WriteString(" --- |")
	}
	m.WriteString("\n")
	for _, r := range rows {
		for i := range r {
			r[i] = strings.ReplaceAll(r[i], "|", `\|`)
		}
		m.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	m.WriteString("\n")
}
