package e2e_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// The warm pool, end to end: the pool function (as its role, on its schedule or asked
// by a start) launches pool tasks through ecslocal, their agents register through the
// credential vendor, and Connect and Prewarm claim them; the claimed agent asks the
// vendor for its user's credentials, restores and marks ready as a launched one does.

// poolLaunchDelay is long against a pool hit's start (about a second), so a start
// that waited for a launch shows.
const poolLaunchDelay = 4 * time.Second

func poolStack(t *testing.T, size int) *testkit.Stack {
	t.Helper()
	return testkit.Start(t, func(o *stack.Options) {
		o.Params = map[string]string{"PoolSize": strconv.Itoa(size)}
		o.LaunchDelay = poolLaunchDelay
		noIdleStop(o)
	})
}

// refill runs the pool function's schedule once and waits for its summary line.
func refill(t *testing.T, s *testkit.Stack) testkit.Line {
	t.Helper()
	mark := s.Output.Mark()
	if err := s.RunSchedule(context.Background(), "PoolFunction"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	l, err := s.Output.AwaitAfter(ctx, mark, func(l testkit.Line) bool {
		return l.Source == s.Name("PoolFunction") && (l.Msg == "refill done" || l.Msg == "refill skipped: another refill is under way or backing off")
	})
	if err != nil {
		t.Fatalf("no refill: %v", err)
	}
	return l
}

func arns(pool []state.PoolTask) []string {
	var out []string
	for _, p := range pool {
		out = append(out, p.TaskARN)
	}
	return out
}

// A pool hit through Connect and one through Prewarm: each user's sandbox is a pool
// task (no RunTask for the user), told starting, restoring and ready as a launched one
// is; the status says warm; the pool refills
// itself after the claims; a deploy's older task definition is drained and replaced;
// a pool task serves one user once, and the counter counts pool tasks and sandboxes
// exactly throughout.
func TestPool_HitEndToEnd(t *testing.T) {
	t.Parallel()
	s := poolStack(t, 2)
	if l := refill(t, s); num(l, "launched") != 2 {
		t.Fatalf("refill launched %v", num(l, "launched"))
	}
	pool := s.WaitPool(t, 2, coldStart)
	s.ExactCapacity(t, 2)

	// Connect: a pool hit.
	const alice = "user_warmalice"
	begin := time.Now()
	c := s.Dial(t, alice)
	c.Status(frames.Starting, reply)
	c.Status(frames.Restoring, reply)
	c.Status(frames.Ready, reply)
	ready := time.Since(begin)
	sb := s.Running(t, alice, reply)
	if !sb.Warm || !slices.Contains(arns(pool), sb.TaskARN) || len(s.RunTasks(alice)) != 0 {
		t.Fatalf("alice's sandbox %+v (pool %v, %d launches of her own)", sb, arns(pool), len(s.RunTasks(alice)))
	}
	// How much sooner is make bench's to say (docs/BENCHMARKS.md, Warm pool): on a
	// loaded machine this suite's other stacks share the cores.
	t.Logf("alice's pool hit: connect → ready in %s (the launch delay is %s)", ready, poolLaunchDelay)
	c.Note("warm note", reply)
	if code, body := s.HTTP(t, http.MethodGet, "/status", s.SignedQuery(t, alice)); code != 200 || body["warm"] != true {
		t.Fatalf("status %d %v", code, body)
	}

	// Prewarm: the other pool task.
	const bob = "user_warmbob"
	code, body := s.HTTP(t, http.MethodPost, "/prewarm", s.SignedQuery(t, bob))
	if code != http.StatusAccepted || body["warm"] != true {
		t.Fatalf("prewarm %d %v", code, body)
	}
	sbBob := s.Running(t, bob, coldStart)
	if !sbBob.Warm || sbBob.TaskARN == sb.TaskARN || !slices.Contains(arns(pool), sbBob.TaskARN) || len(s.RunTasks(bob)) != 0 {
		t.Fatalf("bob's sandbox %+v", sbBob)
	}
	// Each start asked for a refill: the pool is whole again, and the counter counts
	// two sandboxes and two pool tasks.
	refilled := s.WaitPool(t, 2, coldStart)
	s.ExactCapacity(t, 4)

	// A deploy: the current task definition is no longer the one a pool task runs. The
	// refill drains it (its task stopped; its slot back when it has stopped) and
	// launches its replacement.
	old := refilled[0]
	setPoolTaskDefinition(t, s, old.ID, strings.TrimSuffix(old.TaskDefinition, ":1")+":0")
	if l := refill(t, s); num(l, "drained") != 1 || num(l, "launched") != 1 {
		t.Fatalf("refill after a deploy: drained %v, launched %v", num(l, "drained"), num(l, "launched"))
	}
	s.WaitTaskGone(t, old.TaskARN, coldStart)
	s.WaitPool(t, 2, coldStart)
	s.ExactCapacity(t, 4)

	// Single use: alice's sandbox stops (its task with it); her next start is another
	// task, and nothing of hers was in it before her claim.
	c.Close()
	s.StopTask(t, sb.TaskARN)
	s.Stopped(t, alice, coldStart)
	s.WaitTaskGone(t, sb.TaskARN, coldStart)
	c2 := s.Dial(t, alice)
	c2.Status(frames.Ready, coldStart)
	wantNotes(t, c2, "warm note")
	if again := s.Running(t, alice, reply); again.TaskARN == sb.TaskARN || !again.Warm {
		t.Fatalf("alice's second sandbox %+v: the first task served her twice, or it was not warm", again)
	}
	if _, err := s.Store.PoolClaimOf(context.Background(), poolID(pool, sb.TaskARN)); err == nil {
		t.Fatal("the first claim outlived its task")
	}
	s.WaitPool(t, 2, coldStart)
	s.ExactCapacity(t, 4)
}

// poolID is the id of the pool task with arn.
func poolID(pool []state.PoolTask, arn string) string {
	for _, p := range pool {
		if p.TaskARN == arn {
			return p.ID
		}
	}
	return ""
}

// setPoolTaskDefinition rewrites a pool item's task definition, as an operator: what
// the pool sees after a deploy registered a new one.
func setPoolTaskDefinition(t *testing.T, s *testkit.Stack, id, td string) {
	t.Helper()
	_, err := dynamodb.NewFromConfig(s.AWS).UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName: aws.String(s.Table),
		Key: map[string]types.AttributeValue{
			state.AttrPK: &types.AttributeValueMemberS{Value: "POOL"}, state.AttrSK: &types.AttributeValueMemberS{Value: "TASK#" + id},
		},
		UpdateExpression:          aws.String("SET taskDefinition = :td"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":td": &types.AttributeValueMemberS{Value: td}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Faults: a pool task that dies while it waits gives its slot back and is never
// claimed; one that dies right after its claim ends its user's start, who is told and
// served by the next connection; a claim that does not come from a start (forged with
// the secret, as only a reader of the table could) is refused by the vendor, and the
// pool task exits without serving anyone. Each ends with the counter exact.
func TestPool_Faults(t *testing.T) {
	t.Parallel()
	s := poolStack(t, 2)
	refill(t, s)
	pool := s.WaitPool(t, 2, coldStart)

	// Dies while waiting.
	dead := pool[0]
	if err := syscall.Kill(s.TaskPid(t, dead.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.WaitTaskGone(t, dead.TaskARN, coldStart)
	testkit.Eventually(t, reply, func() bool { return len(s.Pool(t)) == 1 }, func() string { return "the dead pool task is still in the pool" })
	s.ExactCapacity(t, 1)

	// A forged claim: the agent believes nothing until the vendor checks the record,
	// which names no such lease; it exits without serving.
	forged := pool[1]
	var api agentapi.Client
	err := api.Claim(context.Background(), forged.Endpoint, forged.ClaimSecret,
		agentapi.Claim{UserID: "user_victim", Generation: 1, LeaseToken: "forged-lease-token"})
	if err != nil {
		t.Fatalf("the claim was not even taken: %v", err)
	}
	if code := s.ExitCode(t, forged.TaskARN, coldStart); code == 0 {
		t.Fatal("the pool task exited cleanly after a claim the vendor refused")
	}
	if _, err := s.Store.Get(context.Background(), "user_victim"); err == nil {
		t.Fatal("a forged claim made a record")
	}
	if keys := s.Keys(t, "users/user_victim/"); len(keys) != 0 {
		t.Fatalf("a forged claim wrote %v", keys)
	}
	s.ExactCapacity(t, 0)

	// Dies right after its claim: the user hears start_failed (or stopping), and the
	// next connection is served.
	refill(t, s)
	pool = s.WaitPool(t, 2, coldStart)
	const carol = "user_warmcarol"
	c := s.Dial(t, carol)
	c.Status(frames.Starting, reply)
	sb := s.WaitState(t, carol, reply, "claimed", func(sb *state.Sandbox) bool { return sb.Warm })
	if err := syscall.Kill(s.TaskPid(t, sb.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	told := c.Next(coldStart, "start_failed or stopping", func(f string) bool {
		return testkit.IsError(f) || testkit.IsStatus(frames.Stopping)(f)
	})
	t.Logf("carol was told %s", told)
	s.Stopped(t, carol, coldStart)
	s.WaitTaskGone(t, sb.TaskARN, coldStart)
	c2 := s.Dial(t, carol)
	c2.Status(frames.Ready, coldStart)
	if again := s.Running(t, carol, reply); again.TaskARN == sb.TaskARN {
		t.Fatal("a dead task served carol again")
	}
	s.WaitPool(t, 2, coldStart)
	s.ExactCapacity(t, 3)
}

// num is a line's numeric field (0 when absent).
func num(l testkit.Line, key string) int64 {
	n, _ := l.Int(key)
	return n
}
