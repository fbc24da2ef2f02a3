package benchreport

// The runs and the section of the workload a team brings: the Node example's start
// against the Go demo's, and what the agent's model proxy adds to a model call.
var (
	RunWorkload = Run{ID: "workload", Bench: "Workload_ConnectReady", Benchtime: "5x", Packages: []string{"./infra/local/bench/"}}
	RunProxy    = Run{ID: "proxy", Bench: "Proxy_ModelCall", Benchtime: "2000x", Packages: []string{"./internal/apiproxy/"}}
)

func (r Report) workload(m *md) {
	m.h2("Bring your own workload")
	m.p("A client's connect → ready with the Node example (`container/node-gateway`, started by `node`) as the workload against the built-in Go demo, " +
		"on one stack in the same run, alternately (every sandbox runs one script that starts either, by the user's name). " +
		"*Own* is connect → ready less the emulated launch as ECS reports it; *workload start* is the agent's restore's end to the workload accepting connections " +
		"(the launcher and the program's own start), from the agent's log lines. No goal was set; the ratios are the measure. Medians.")
	r.command(m, RunWorkload)
	var rows [][]string
	if res, ok := r.Result(RunWorkload.ID, "Workload_ConnectReady/demo-vs-node"); ok {
		mt := res.Metrics
		rows = append(rows,
			[]string{"Go demo", ms(mt["demo-connect-ready-ms"]), ms(mt["demo-own-ms"]), ms(mt["demo-workload-start-ms"]), "1×", "1×"},
			[]string{"Node example", ms(mt["node-connect-ready-ms"]), ms(mt["node-own-ms"]), ms(mt["node-workload-start-ms"]), x(mt["x-demo-own"]), x(mt["x-demo-workload-start"])})
	}
	m.table([]string{"workload", "connect → ready", "own", "workload start", "own ÷ demo", "workload start ÷ demo"}, rows)

	m.p("A streamed model call (the model stub's Messages API on loopback, several server-sent events, read to the end) through the agent's reverse proxy — " +
		"the key added, the answer metered and scrubbed as it streams, the spend checked and recorded, one log line — against the same call made directly to the same stub, alternately.")
	r.command(m, RunProxy)
	rows = nil
	if res, ok := r.Result(RunProxy.ID, "Proxy_ModelCall"); ok {
		mt := res.Metrics
		rows = append(rows, []string{ms(mt["proxy-p50-ms"]), ms(mt["proxy-p99-ms"]), ms(mt["direct-p50-ms"]), ms(mt["direct-p99-ms"]),
			ms(mt["added-p50-ms"]), x(mt["x-direct-p50"])})
	}
	m.table([]string{"proxy p50", "proxy p99", "direct p50", "direct p99", "added p50", "p50 ÷ direct"}, rows)
}
