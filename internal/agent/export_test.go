package agent

// The agent's privileged file steps, for the test that runs them with only the
// capabilities the task definition leaves the agent.
var (
	PrepareDirs = prepareDirs
	HandOver    = handOver
)
