package pool_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/pool"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const taskDef = "arn:aws:ecs:us-east-1:000000000000:task-definition/" + testkit.Family + ":1"

type env struct {
	db      *testkit.DB
	store   *state.Store
	ecs     *testkit.ECS
	r       *pool.Refiller
	logs    *testkit.Logs
	metrics *testkit.Logs
}

func newEnv(t *testing.T, size int, configure ...func(*ecslocal.Server)) *env {
	t.Helper()
	e := &env{db: testkit.NewDB(t), logs: &testkit.Logs{}, metrics: &testkit.Logs{}}
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, e.logs.Logger(), configure...)
	cfg := e.ecs.LauncherConfig(e.db.Table, "http://127.0.0.1:1/test")
	cfg.TaskDefinition = taskDef
	e.r = &pool.Refiller{Store: e.store, Launcher: launcher.New(e.ecs.Client, cfg, e.logs.Logger()), Log: e.logs.Logger(),
		Metrics: metrics.New(e.metrics), Stage: "test", Size: size, TaskDefinition: taskDef, MaxAge: time.Hour,
		Rate: 100, Now: e.db.Clock.Now}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(e.logs.String())
		}
	})
	return e
}

func (e *env) run(t *testing.T) pool.Summary {
	t.Helper()
	sum, err := e.r.Run(context.Background())
	if err != nil {
		t.Fatalf("refill: %v (%+v)", err, sum)
	}
	return sum
}

func (e *env) pool(t *testing.T) map[state.PoolState]int {
	t.Helper()
	tasks, err := e.store.PoolTasks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := map[state.PoolState]int{}
	for _, p := range tasks {
		n[p.State]++
	}
	return n
}

// exact asserts the counter equals what holds a slot, and returns it.
func (e *env) exact(t *testing.T) int {
	t.Helper()
	held, err := e.store.CountSlots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.store.Capacity(context.Background())
	if err != nil || c != held {
		t.Fatalf("capacity counter %d, slots held %d (%v)", c, held, err)
	}
	return c
}

// register makes every LAUNCHING pool task WAITING as its agent would.
func (e *env) register(t *testing.T, launched time.Time, td string) {
	t.Helper()
	tasks, _ := e.store.PoolTasks(context.Background())
	for _, p := range tasks {
		if p.State != state.PoolLaunching {
			continue
		}
		if _, err := e.store.RegisterPool(context.Background(), state.PoolRegistration{ID: p.ID, TaskARN: p.TaskARN,
			TaskDefinition: td, Endpoint: "http://127.0.9.9:8080", ClaimSecret: strings.Repeat("s", 43), LaunchedAt: launched}); err != nil {
			t.Fatal(err)
		}
	}
}

// The refill launches pool tasks up to the size — each a pool item holding a slot,
// with no user in its overrides — and a second refill finds the pool full.
func TestRefiller_FillsToSize(t *testing.T) {
	e := newEnv(t, 3)
	sum := e.run(t)
	if sum.Launched != 3 || sum.Launching != 3 || e.pool(t)[state.PoolLaunching] != 3 || e.exact(t) != 3 {
		t.Fatalf("summary %+v, pool %v", sum, e.pool(t))
	}
	for _, r := range e.ecs.RunTasks() {
		env := testkit.TaskEnv(r)
		if env[taskenv.PoolID] == "" || env[taskenv.UserID] != "" || env[taskenv.LeaseToken] != "" {
			t.Fatalf("pool task's overrides %v", env)
		}
	}
	if sum := e.run(t); sum.Launched != 0 || sum.Launching != 3 {
		t.Fatalf("second refill %+v", sum)
	}
	e.register(t, e.db.Clock.Now(), taskDef)
	if sum := e.run(t); sum.Launched != 0 || sum.Waiting != 3 {
		t.Fatalf("refill of a full pool %+v", sum)
	}
	if !strings.Contains(e.metrics.String(), `"PoolSize":3`) || !strings.Contains(e.metrics.String(), `"PoolRefills":3`) {
		t.Fatalf("metrics %s", e.metrics.String())
	}
}

// Pool tasks count against capacity: the refill stops at the limit.
func TestRefiller_StopsAtCapacity(t *testing.T) {
	e := newEnv(t, 5)
	e.store.MaxSandboxes = 3
	if _, err := e.store.Acquire(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	sum := e.run(t)
	if sum.Launched != 2 || !sum.AtCapacity || e.exact(t) != 3 {
		t.Fatalf("summary %+v", sum)
	}
}

// A launch ECS throttles gives its slot back, ends the refill, and keeps the next one
// off for the back-off; one refused for Fargate capacity gives its slot back too.
func TestRefiller_ThrottledBacksOff(t *testing.T) {
	e := newEnv(t, 4)
	e.ecs.Server.FailRunTask(ecslocal.ThrottlingException, -1)
	sum := e.run(t)
	if !sum.Throttled || sum.Launched != 0 || len(e.pool(t)) != 0 || e.exact(t) != 0 {
		t.Fatalf("summary %+v, pool %v", sum, e.pool(t))
	}
	e.ecs.Server.ClearFaults()
	if sum := e.run(t); !sum.Locked || sum.Launched != 0 {
		t.Fatalf("refill during the back-off %+v", sum)
	}
	e.db.Clock.Advance(pool.DefaultBackoff + time.Second)
	e.ecs.Server.RefuseCapacity(1)
	if sum := e.run(t); !sum.AtCapacity || sum.Launched != 0 || e.exact(t) != 0 {
		t.Fatalf("refill refused capacity %+v", sum)
	}
	if sum := e.run(t); sum.Launched != 4 || e.exact(t) != 4 {
		t.Fatalf("refill after it all %+v", sum)
	}
}

// A deploy (another task definition), age and a registration that never came take
// tasks out of the pool (DRAINING, their tasks stopped; their slots come back when
// they are seen to stop), and the refill replaces them; a pool of size 0 drains all.
func TestRefiller_Drains(t *testing.T) {
	e := newEnv(t, 2)
	e.run(t)
	e.register(t, e.db.Clock.Now(), "arn:aws:ecs:us-east-1:000000000000:task-definition/"+testkit.Family+":0")
	sum := e.run(t)
	if sum.Drained != 2 || sum.Launched != 2 || e.pool(t)[state.PoolDraining] != 2 || e.exact(t) != 4 {
		t.Fatalf("deploy: %+v, pool %v", sum, e.pool(t))
	}
	e.register(t, e.db.Clock.Now(), taskDef)
	e.db.Clock.Advance(time.Hour)
	if sum := e.run(t); sum.Drained != 2 || sum.Launched != 2 {
		t.Fatalf("max age: %+v", sum)
	}
	e.db.Clock.Advance(pool.DefaultRegisterGrace + time.Minute)
	if sum := e.run(t); sum.Drained != 2 || sum.Launched != 2 {
		t.Fatalf("never registered: %+v", sum)
	}
	// Every drained task was asked to stop.
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.ecs.Server.Tasks()) == 2 },
		func() string { return "drained tasks still running" })
	e.r.Size = 0
	if sum := e.run(t); sum.Drained != 2 || sum.Launched != 0 || sum.Waiting+sum.Launching != 0 {
		t.Fatalf("size 0: %+v", sum)
	}
	// Each drained task's stop gives its slot back, once.
	tasks, _ := e.store.PoolTasks(context.Background())
	for _, p := range tasks {
		if p.State != state.PoolDraining {
			t.Fatalf("pool item %+v", p)
		}
		if ok, err := e.store.RemovePool(context.Background(), p.ID, "task stopped"); !ok || err != nil {
			t.Fatal(err)
		}
	}
	if e.exact(t) != 0 {
		t.Fatal("slots")
	}
}

// Refills asked for by many starts at once fill the pool once: one holds the lock.
func TestRefiller_ConcurrentRefillsFillOnce(t *testing.T) {
	e := newEnv(t, 4)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := e.r.Run(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.pool(t)[state.PoolLaunching]; n != 4 || e.exact(t) != 4 || len(e.ecs.RunTasks()) != 4 {
		t.Fatalf("%d pool tasks, %d launches", n, len(e.ecs.RunTasks()))
	}
}
