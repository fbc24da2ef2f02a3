package ensure_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// poolTask is a waiting pool task: a slot reserved, a stand-in task launched, and a
// claim server (what the agent serves while it waits) registered as its endpoint.
type poolTask struct {
	state.PoolTask
	srv    *httptest.Server
	claims chan agentapi.Claim
}

// refills counts the refills a start asks for.
type refills struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refills) Refill(_ context.Context, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
	return nil
}

func (r *refills) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reasons)
}

// withPool gives the env's Ensurer a pool of the stand-in task definition.
func (e *env) withPool(t *testing.T) (*refills, *testkit.Logs) {
	t.Helper()
	r := &refills{}
	m := &testkit.Logs{}
	e.ens.Pool = &ensure.Pool{Store: e.store, TaskDefinition: e.taskDef(t), MaxAge: time.Hour,
		Claimer: &agentapi.Client{}, Refill: r, Metrics: metrics.New(m), Stage: "test"}
	return r, m
}

// taskDef is the ARN of the stand-in task definition, as ECS reports it of its tasks.
func (e *env) taskDef(t *testing.T) string {
	t.Helper()
	return "arn:aws:ecs:us-east-1:000000000000:task-definition/" + testkit.Family + ":1"
}

func (e *env) poolTask(t *testing.T, taskDef string, launched time.Time) *poolTask {
	t.Helper()
	ctx := context.Background()
	p, err := e.store.ReservePool(ctx, taskDef)
	if err != nil {
		t.Fatal(err)
	}
	l := e.ecs.Launcher(e.logs.Logger(), e.db.Table, "http://127.0.0.1:1/test")
	arn, err := l.LaunchPool(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	pt := &poolTask{claims: make(chan agentapi.Claim, 4)}
	secret := strings.Repeat("k", 43)
	pt.srv = httptest.NewServer(agentapi.NewClaimServer(secret, func(c agentapi.Claim) { pt.claims <- c }))
	t.Cleanup(pt.srv.Close)
	pt.PoolTask, err = e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: arn, TaskDefinition: taskDef,
		Endpoint: pt.srv.URL, ClaimSecret: secret, LaunchedAt: launched})
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

// userRunTasks counts the RunTask calls for users (not the pool's).
func (e *env) userRunTasks() int {
	n := 0
	for _, r := range e.ecs.RunTasks() {
		if testkit.TaskEnv(r)["SANDGATE_USER_ID"] != "" {
			n++
		}
	}
	return n
}

// A pool hit: the start claims the waiting task in its lease's write, hands it the
// user, lease and generation, and launches nothing; the record names the pool task
// and says the start was warm; the counter is where the pool task put it; the log
// line and the metric say hit, and a refill is asked for.
func TestEnsurer_Ensure_PoolHit(t *testing.T) {
	e := newEnv(t)
	refill, metricLines := e.withPool(t)
	pt := e.poolTask(t, e.taskDef(t), time.Now())
	res, err := e.ens.Ensure(context.Background(), "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started || !res.Warm || res.Sandbox.TaskARN != pt.TaskARN {
		t.Fatalf("result %+v, sandbox %+v", res, res.Sandbox)
	}
	sb := e.get(t, "user_a")
	c := <-pt.claims
	if c.UserID != "user_a" || c.Generation != sb.Generation || c.LeaseToken != sb.LeaseToken {
		t.Fatalf("claim %+v for record %+v", c, sb)
	}
	if sb.State != state.Starting || sb.TaskARN != pt.TaskARN || !sb.Warm {
		t.Fatalf("record %+v", sb)
	}
	if e.userRunTasks() != 0 || e.capacity(t) != 1 {
		t.Fatalf("%d user launches, capacity %d", e.userRunTasks(), e.capacity(t))
	}
	if hits := e.logs.With(t, "pool", ensure.PoolHit); len(hits) != 1 || strings.Contains(e.logs.String(), pt.ClaimSecret) ||
		strings.Contains(e.logs.String(), sb.LeaseToken) {
		t.Fatalf("logs: %s", e.logs.String())
	}
	if !strings.Contains(metricLines.String(), `"PoolHits":1`) || refill.n() != 1 {
		t.Fatalf("metrics %s, %d refills", metricLines.String(), refill.n())
	}
}

// A pool miss: no claimable task (none, one of another task definition, one past its
// age) launches as before and says miss.
func TestEnsurer_Ensure_PoolMiss(t *testing.T) {
	e := newEnv(t)
	refill, metricLines := e.withPool(t)
	e.poolTask(t, "arn:aws:ecs:us-east-1:000000000000:task-definition/"+testkit.Family+":0", time.Now())
	e.poolTask(t, e.taskDef(t), time.Now().Add(-2*time.Hour))
	res, err := e.ens.Ensure(context.Background(), "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started || res.Warm || e.userRunTasks() != 1 {
		t.Fatalf("result %+v, %d launches", res, e.userRunTasks())
	}
	if sb := e.get(t, "user_a"); sb.Warm || sb.TaskARN != res.Sandbox.TaskARN {
		t.Fatalf("record %+v", sb)
	}
	// A miss found nothing to claim: the claims that emptied the pool asked for its
	// refill, the schedule does the rest.
	if len(e.logs.With(t, "pool", ensure.PoolMiss)) != 1 || !strings.Contains(metricLines.String(), `"PoolMisses":1`) || refill.n() != 0 {
		t.Fatalf("logs %s, metrics %s", e.logs.String(), metricLines.String())
	}
	if e.capacity(t) != 3 { // the user's task and the two pool tasks never claimed
		t.Fatalf("capacity %d", e.capacity(t))
	}
}

// A claim that does not reach its task (it died, or cannot be reached): the start
// launches a task under the same lease, which the record names instead, and the pool
// task is stopped; the user is served, the counter exact.
func TestEnsurer_Ensure_ClaimNotDelivered(t *testing.T) {
	e := newEnv(t)
	e.withPool(t)
	pt := e.poolTask(t, e.taskDef(t), time.Now())
	pt.srv.Close() // the agent is gone
	res, err := e.ens.Ensure(context.Background(), "user_a")
	if err != nil {
		t.Fatal(err)
	}
	sb := e.get(t, "user_a")
	if res.Warm || sb.Warm || sb.TaskARN == pt.TaskARN || sb.TaskARN != res.Sandbox.TaskARN || e.userRunTasks() != 1 {
		t.Fatalf("result %+v, record %+v", res, sb)
	}
	if c, err := e.store.PoolClaimOf(context.Background(), pt.ID); err != nil || c.UserID != "user_a" {
		t.Fatalf("claim item %+v, %v", c, err)
	}
	// The pool task is on its way down; its stop will find a record naming another task.
	testkit.Eventually(t, 10*time.Second, func() bool {
		for _, ti := range e.ecs.Server.Tasks() { // the tasks not stopped yet
			if ti.ARN == pt.TaskARN {
				return ti.DesiredStatus == "STOPPED"
			}
		}
		return true
	}, func() string { return "the unclaimed pool task was not stopped" })
	end, err := e.store.TaskStopped(context.Background(), state.TaskRef{UserID: "user_a", Generation: sb.Generation, TaskARN: pt.TaskARN}, "stopped")
	if err != nil || end != (state.TaskEnd{}) {
		t.Fatalf("the pool task's stop changed the user's record: %+v %v", end, err)
	}
	if e.capacity(t) != 1 {
		t.Fatalf("capacity %d", e.capacity(t))
	}
}

// Starts racing for a pool smaller than their number: each pool task takes exactly
// one claim, every user is served once, warm or cold, and the counter counts them all.
func TestEnsurer_Ensure_PoolRace(t *testing.T) {
	e := newEnv(t)
	refill, _ := e.withPool(t)
	e.ens.Pool.RefillEvery = time.Hour
	const pool, users = 3, 10
	tasks := make([]*poolTask, pool)
	for i := range tasks {
		tasks[i] = e.poolTask(t, e.taskDef(t), time.Now())
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	warm := 0
	for i := range users {
		for range 2 { // each user twice at once: one lease, one task
			wg.Go(func() {
				res, err := e.ens.Ensure(context.Background(), fmt.Sprintf("user_r%02d", i))
				if err != nil {
					t.Error(err)
					return
				}
				if res.Warm {
					mu.Lock()
					warm++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, pt := range tasks {
		if n := len(pt.claims); n != 1 {
			t.Fatalf("pool task %s took %d claims", pt.ID, n)
		}
	}
	if warm != pool || e.userRunTasks() != users-pool || e.capacity(t) != users {
		t.Fatalf("%d warm starts, %d launches, capacity %d", warm, e.userRunTasks(), e.capacity(t))
	}
	// Three claims in a moment ask for one refill from this process.
	if n := refill.n(); n != 1 {
		t.Fatalf("%d refills asked for", n)
	}
}

// lostClaims stands in for a network that loses the claim after the start's write: it
// says the claim was taken and sends nothing.
type lostClaims struct{}

func (lostClaims) Claim(context.Context, string, string, agentapi.Claim) error { return nil }

// A claim that never reaches its task (the start died between its write and the
// claim, or the answer lied): the pool task keeps waiting and the lease runs out; the
// next start takes it over, stops the pool task and is served; the counter counts one
// sandbox throughout, and the pool task never served anyone.
func TestEnsurer_Ensure_ClaimNeverArrives(t *testing.T) {
	e := newEnv(t)
	e.withPool(t)
	e.ens.Pool.Claimer = lostClaims{}
	e.ens.Now = e.db.Clock.Now
	pt := e.poolTask(t, e.taskDef(t), e.db.Clock.Now())
	res, err := e.ens.Ensure(context.Background(), "user_a")
	if err != nil || !res.Warm {
		t.Fatalf("first start %+v %v", res, err)
	}
	if len(pt.claims) != 0 || e.capacity(t) != 1 {
		t.Fatal("setup")
	}
	// Within the start lease the start is the user's: nothing else starts.
	if res, err := e.ens.Ensure(context.Background(), "user_a"); err != nil || res.Started {
		t.Fatalf("second start within the lease %+v %v", res, err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL + time.Second)
	res, err = e.ens.Ensure(context.Background(), "user_a")
	if err != nil || !res.Started || res.Warm || res.Sandbox.TaskARN == pt.TaskARN {
		t.Fatalf("start after the lease ran out %+v %v", res, err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		for _, ti := range e.ecs.Server.Tasks() {
			if ti.ARN == pt.TaskARN {
				return ti.DesiredStatus == "STOPPED"
			}
		}
		return true
	}, func() string { return "the pool task whose claim never came was not stopped" })
	if len(pt.claims) != 0 || e.capacity(t) != 1 {
		t.Fatalf("%d claims reached the pool task, capacity %d", len(pt.claims), e.capacity(t))
	}
}
