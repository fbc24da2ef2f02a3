package benchreport

import "fmt"

// RunCleanup measures what one cleanup pass reads, before and after the Sandboxes
// index, against the number of users (issue 20).
var RunCleanup = Run{ID: "cleanup", Bench: "Cleanup_ReadsPerPass", Benchtime: "3x", Packages: []string{"./internal/state/"}}

// CleanupUsers are the sub-benchmarks of RunCleanup; CleanupReadRatio is the goal
// at the largest: a pass reads at most this share of what the full scans read.
var (
	CleanupUsers     = []int{100, 1000}
	CleanupReadRatio = 0.25
)

func (r Report) cleanupGoals() []Goal {
	n := CleanupUsers[len(CleanupUsers)-1]
	g := Goal{What: fmt.Sprintf("cleanup pass reads ≤ %.2f × the full scans' read capacity, %d users", CleanupReadRatio, n), Status: Missing}
	if res, ok := r.Result(RunCleanup.ID, fmt.Sprintf("Cleanup_ReadsPerPass/users=%d", n)); ok {
		mt := res.Metrics
		g.Measured = fmt.Sprintf("%s → %s units (%s)", num(mt["rcu-before/pass"]), num(mt["rcu-after/pass"]), x(mt["x-rcu"]))
		g.Status = judge(mt["x-rcu"] <= CleanupReadRatio)
	}
	return []Goal{g}
}

func (r Report) cleanupReads(m *md) {
	m.h2("Cleanup reads per pass")
	m.p("What one cleanup pass reads from DynamoDB against the number of users, on one table in the same run: every user has a sandbox record " +
		"(one in ten a live lease, the rest STOPPED), two connections and two 1 KiB inbox items. *Before* is what a pass read until the Sandboxes index: " +
		"an eventually consistent Scan of the whole table to list the sandboxes, and the capacity check's counter GetItem and consistent Scan of the whole table. " +
		"*After* is what a pass reads now: the backfill marker's GetItem, the index's Scan and the leases read whole (BatchGetItem), " +
		"and the capacity check with an index that agrees with the counter (the counter, the index, the pool's Query). " +
		"Read capacity units are DynamoDB Local's (ReturnConsumedCapacity TOTAL, summed); *items* are the items each read evaluated; " +
		"the table's and the index's sizes are computed from the items by DynamoDB's size rule, to check the units against " +
		"(a Scan costs half a unit per 4 KiB evaluated, a consistent one a unit).")
	r.command(m, RunCleanup)
	var rows [][]string
	for _, n := range CleanupUsers {
		res, ok := r.Result(RunCleanup.ID, fmt.Sprintf("Cleanup_ReadsPerPass/users=%d", n))
		if !ok {
			continue
		}
		mt := res.Metrics
		rows = append(rows, []string{fmt.Sprint(n), num(mt["table-KiB"]) + " KiB", num(mt["index-KiB"]) + " KiB",
			num(mt["rcu-before/pass"]), num(mt["rcu-after/pass"]), num(mt["rcu-after-listing/pass"]), x(mt["x-rcu"]),
			num(mt["items-before/pass"]), num(mt["items-after/pass"]), x(mt["x-items"])})
	}
	m.table([]string{"users", "table", "index", "units before", "units after", "of which listing", "after ÷ before",
		"items before", "items after", "after ÷ before"}, rows)
}
