package benchreport

import "fmt"

// RunRecovery is issue 23's kill -9 chaos benchmark: the recovery point a crash
// actually has, against SYNC_INTERVAL.
var RunRecovery = Run{ID: "recovery", Bench: "Recovery_KillUnderWrites", Benchtime: "1x", Packages: []string{"./infra/local/bench/"}}

// RecoveryIntervals are the SYNC_INTERVALs the benchmark measures (seconds).
var RecoveryIntervals = []int{1, 5}

// recoveryBound judges a run: no kill lost more than SYNC_INTERVAL plus the lag of its
// own sync (walk to receipt heard), the documented worst case for a crash.
func recoveryBound(mt map[string]float64) Status { return judge(mt["max-over-bound-ms"] <= 0) }

func (r Report) recoveryGoals() []Goal {
	var gs []Goal
	for _, s := range RecoveryIntervals {
		g := Goal{What: fmt.Sprintf("kill -9 under writes, SYNC_INTERVAL %d s: data lost spans ≤ SYNC_INTERVAL + one sync, every run", s), Status: Missing}
		if res, ok := r.Result(RunRecovery.ID, fmt.Sprintf("Recovery_KillUnderWrites/interval=%ds", s)); ok {
			mt := res.Metrics
			g.Measured = fmt.Sprintf("max %s over %s runs (p50 %s; a sync took up to %s)", ms(mt["max-window-ms"]), num(mt["runs"]), ms(mt["p50-window-ms"]), ms(mt["max-sync-lag-ms"]))
			g.Status = recoveryBound(mt)
		}
		gs = append(gs, g)
	}
	return gs
}

func (r Report) recovery(m *md) {
	m.h2("Recovery point: kill -9 under writes")
	m.p("What a crash loses, measured: a writer puts a new file into a running sandbox's workspace every 10 ms, the task is killed with SIGKILL " +
		"(no final sync, no release) at a moment drawn uniformly from one SYNC_INTERVAL after a durability receipt, the next sandbox restores, " +
		"and the *loss window* is the span from the earliest completed write it lacks to the kill (0 when nothing was lost): the recovery point that crash had. " +
		"Every run also checks the receipt: no write completed before the last receipt's time may be missing. " +
		"The documented worst case for a crash is SYNC_INTERVAL plus the duration of one sync: a kill just before the sync in flight completes loses " +
		"everything since the previous sync began. *Sync lag* is, per run, how long after its sync began reading the workspace the receipt reached the client " +
		"(the sync, its marker, the record and the post; with a write every 10 ms a sync stores a hundred new files per second of SYNC_INTERVAL); " +
		"*over the bound* is the most any run's loss exceeded SYNC_INTERVAL plus its own sync lag (negative: none did). " +
		"A clean stop (SIGTERM, idle, lifetime) loses nothing, as its final sync runs after the workload stopped.")
	r.command(m, RunRecovery)
	var rows [][]string
	for _, s := range RecoveryIntervals {
		res, ok := r.Result(RunRecovery.ID, fmt.Sprintf("Recovery_KillUnderWrites/interval=%ds", s))
		if !ok {
			continue
		}
		mt := res.Metrics
		rows = append(rows, []string{fmt.Sprintf("%d s", s), num(mt["runs"]), ms(mt["p50-window-ms"]), ms(mt["p95-window-ms"]), ms(mt["max-window-ms"]),
			x(mt["x-interval-max"]), ms(mt["p50-sync-lag-ms"]) + " / " + ms(mt["max-sync-lag-ms"]), ms(mt["max-over-bound-ms"]),
			ms(mt["max-since-receipt-ms"]), fmt.Sprintf("%.1f %%", 100*mt["lost-fraction"]), string(recoveryBound(mt))})
	}
	m.table([]string{"SYNC_INTERVAL", "runs", "loss window p50", "p95", "max (observed recovery point)", "max ÷ interval",
		"sync lag p50 / max", "over the bound", "oldest receipt at a kill", "writes lost", "goal"}, rows)
}
