package vend_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
)

// poolEnv is a vendor that lets pool tasks register, over the local ECS and a table.
type poolEnv struct {
	*env
	ecs *testkit.ECS
	l   *launcher.Launcher
}

const localAccount = "000000000000" // ecslocal's

func newPoolEnv(t *testing.T) *poolEnv {
	t.Helper()
	e := newEnv(t)
	pe := &poolEnv{env: e, ecs: testkit.StartECS(t, e.logs.Logger())}
	pe.l = pe.ecs.Launcher(e.logs.Logger(), e.db.Table, "http://127.0.0.1:1/local")
	e.h.Account, e.h.Cluster = localAccount, testkit.Cluster
	e.h.ECS, e.h.Pool = pe.ecs.Client, e.store
	return pe
}

// launchPool reserves a pool slot and launches its task, returning the pool id and
// the task's id (the name of its task-role session).
func (pe *poolEnv) launchPool(t *testing.T) (string, string) {
	t.Helper()
	p, err := pe.store.ReservePool(context.Background(), testkit.Family)
	if err != nil {
		t.Fatal(err)
	}
	arn, err := pe.l.LaunchPool(context.Background(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID, arn[strings.LastIndex(arn, "/")+1:]
}

func localCaller(task string) string {
	return "arn:aws:sts::" + localAccount + ":assumed-role/" + taskRole + "/" + task
}

func (pe *poolEnv) register(t *testing.T, caller, secret string) events.LambdaFunctionURLResponse {
	t.Helper()
	b, _ := json.Marshal(vend.PoolRegistration{ClaimSecret: secret})
	return pe.call(t, caller, http.MethodPost, vend.PathPoolRegister, string(b))
}

var secret = strings.Repeat("s", 43)

// A pool task registers once: its pool item becomes WAITING with the address ECS gave
// it, the task definition it runs and its launch time — nothing the task said but its
// secret. The same registration again is the same; another secret is refused.
func TestHandler_Register_PoolTask(t *testing.T) {
	pe := newPoolEnv(t)
	id, task := pe.launchPool(t)
	resp := pe.register(t, localCaller(task), secret)
	var got vend.PoolRegistered
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(resp.Body), &got) != nil || got.PoolID != id {
		t.Fatalf("answer %d %s", resp.StatusCode, resp.Body)
	}
	p, err := pe.store.PoolTaskOf(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	info := pe.ecs.Server.Tasks()[0]
	if p.State != state.PoolWaiting || p.Endpoint != "http://"+info.IP.String()+":8080" || p.ClaimSecret != secret ||
		!strings.Contains(p.TaskDefinition, ":task-definition/"+testkit.Family+":1") || !strings.HasSuffix(p.TaskARN, task) ||
		time.Since(p.LaunchedAt) > time.Minute {
		t.Fatalf("pool item %+v (task at %s)", p, info.IP)
	}
	if strings.Contains(pe.logs.String(), secret) {
		t.Fatal("the claim secret was logged")
	}
	if resp := pe.register(t, localCaller(task), secret); resp.StatusCode != http.StatusOK {
		t.Fatalf("the same registration again: %d %s", resp.StatusCode, resp.Body)
	}
	pe.refused(t, pe.register(t, localCaller(task), strings.Repeat("x", 43)), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotLaunched)
}

// Only a pool task the launcher started, running, whose pool item waits for it, may
// register, and only as a session of the task role named after it.
func TestHandler_Register_Refusals(t *testing.T) {
	pe := newPoolEnv(t)
	ctx := context.Background()

	// A user's task: no pool id in its overrides.
	arn, err := pe.l.Launch(ctx, launcher.Spec{UserID: "user_alice", LeaseToken: "tok0000000000000000000000", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	pe.refused(t, pe.register(t, localCaller(arn[strings.LastIndex(arn, "/")+1:]), secret), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotPoolTask)

	// A task ECS does not run.
	pe.refused(t, pe.register(t, localCaller("0123456789abcdef0123456789abcdef"), secret), http.StatusForbidden, vend.CodeRefused, vend.ReasonTaskGone)

	// Another role's session named after a pool task.
	_, task := pe.launchPool(t)
	pe.refused(t, pe.register(t, "arn:aws:sts::"+localAccount+":assumed-role/other-role/"+task, secret), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotTask)

	// A secret too short to be one.
	pe.refused(t, pe.register(t, localCaller(task), "short"), http.StatusBadRequest, vend.CodeBadRequest, vend.ReasonBadRequest)

	// A pool task whose item is gone (claimed, or its stop handled): never again.
	id2, task2 := pe.launchPool(t)
	if removed, err := pe.store.RemovePool(ctx, id2, "test"); err != nil || !removed {
		t.Fatal(err)
	}
	pe.refused(t, pe.register(t, localCaller(task2), secret), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotLaunched)

	// A stopped pool task.
	_, task3 := pe.launchPool(t)
	if err := pe.l.Stop(ctx, task3, "test"); err != nil {
		t.Fatal(err)
	}
	pe.refused(t, pe.register(t, localCaller(task3), secret), http.StatusForbidden, vend.CodeRefused, vend.ReasonTaskGone)
}
