package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// A compromised agent rewrites its own record to point the control plane at another
// user's running task, and the control plane never touches that task. Its session may
// update its record (it must: heartbeats, readiness, its stop), so it tries every field
// a function trusts: the task the record names (which cleanup's reap and a takeover
// stop), the user the record claims, the control plane's marks (warm, a purge's start,
// a restart request) — alone, together with a field it may write, removed, and inside a
// transaction. Each is refused and its record is unchanged, byte for byte. It then
// writes what it may: its lease run out, its endpoint set to the victim's agent, a
// gateway token of its own. Cleanup reaps it, and separately another start
// takes over a second attacker's record: each stops the attacker's own task, and the
// victim's task keeps running (the same process, never asked to stop), its items
// (lease, record, slot, connection) are unchanged byte for byte, the capacity counter
// equals the records that hold a slot, and the victim's sandbox still answers.
func TestSandboxSession_RewritingItsRecordNeverReachesAnotherUser(t *testing.T) {
	t.Parallel()
	// Its own stack: cleanup acts on every record of a stack. Leases long enough that
	// the victim's agent writes nothing during the test (its heartbeat is a third of
	// the lease), and no idle stop.
	s := testkit.Start(t, func(o *stack.Options) {
		o.LaunchDelay = launchDelay
		o.Overrides["LEASE_TTL"] = "10m"
		noIdleStop(o)
	})
	ctx := context.Background()
	victim := "user_forgevictim"
	vc := s.DialReady(t, victim, coldStart)
	// The victim's own agent records its first sync's receipt on its record; after it,
	// an idle victim writes nothing (no change to store, a 10-minute lease's heartbeat
	// far off), so any change is the attacker's.
	vrec := s.WaitState(t, victim, reply, "running with its first receipt", func(sb *state.Sandbox) bool {
		return sb.State == state.Running && sb.LastSync != nil
	})
	vpid := s.TaskPid(t, vrec.TaskARN)
	before := victimState(t, s, victim)

	// victimUntouched checks the victim's task, items and process.
	victimUntouched := func(t *testing.T) {
		t.Helper()
		out, err := s.ECSClient().DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(s.Cluster), Tasks: []string{vrec.TaskARN}})
		if err != nil || len(out.Tasks) != 1 {
			t.Fatalf("DescribeTasks of the victim's task: %+v, %v", out, err)
		}
		task := out.Tasks[0]
		if aws.ToString(task.LastStatus) != "RUNNING" || aws.ToString(task.DesiredStatus) != "RUNNING" || task.StoppedReason != nil {
			t.Errorf("the victim's task is %s, desired %s, stopped for %q", aws.ToString(task.LastStatus),
				aws.ToString(task.DesiredStatus), aws.ToString(task.StoppedReason))
		}
		if pid := s.TaskPid(t, vrec.TaskARN); pid != vpid {
			t.Errorf("the victim's agent is process %d, was %d", pid, vpid)
		}
		if after := victimState(t, s, victim); string(after) != string(before) {
			t.Errorf("the victim's items changed:\n got %s\nwant %s", after, before)
		}
	}

	// forge plays user's compromised agent: every rewrite that would name the victim's
	// task or user is refused, then it makes its own lease run out, pointing what it may
	// write at the victim.
	forge := func(t *testing.T, user string, rec *state.Sandbox) {
		t.Helper()
		// The real agent is held still, so that only the attacker writes the record.
		pid := s.TaskPid(t, rec.TaskARN)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		taskID := rec.TaskARN[strings.LastIndexByte(rec.TaskARN, '/')+1:]
		ddb := s.DynamoDBAs(s.SandboxSession(t, user, taskID))
		table := aws.String(s.Table)
		own := itemKey(user, "SANDBOX")
		str := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
		num := func(v int64) types.AttributeValue {
			return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
		}
		past := num(time.Now().Add(-time.Minute).UnixMilli())
		mine := victimState(t, s, user)

		for _, a := range []struct {
			what, update string
			values       map[string]types.AttributeValue
		}{
			{"the task it names, to the victim's", "SET taskArn = :v", map[string]types.AttributeValue{":v": str(vrec.TaskARN)}},
			{"the task it names, with its lease run out", "SET taskArn = :v, leaseDeadline = :d", map[string]types.AttributeValue{":v": str(vrec.TaskARN), ":d": past}},
			{"the task it names, removed", "REMOVE taskArn", nil},
			{"the user it claims, to the victim", "SET userId = :v", map[string]types.AttributeValue{":v": str(victim)}},
			{"warm", "SET warm = :v", map[string]types.AttributeValue{":v": &types.AttributeValueMemberBOOL{Value: true}}},
			{"a purge's start", "SET purgeStarted = :v", map[string]types.AttributeValue{":v": num(1)}},
			{"a restart request", "SET restartFor = :v", map[string]types.AttributeValue{":v": num(vrec.Generation)}},
			{"an attribute of its own", "SET x = :v", map[string]types.AttributeValue{":v": str(vrec.TaskARN)}},
		} {
			_, err := ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: table, Key: own,
				UpdateExpression: aws.String(a.update), ExpressionAttributeValues: a.values})
			if code := testkit.ErrorCode(err); code != "AccessDeniedException" {
				t.Errorf("UpdateItem of its record's %s: %v (%s), want AccessDeniedException", a.what, err, code)
			}
		}
		_, err := ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{{
			Update: &types.Update{TableName: table, Key: own, UpdateExpression: aws.String("SET taskArn = :v"),
				ExpressionAttributeValues: map[string]types.AttributeValue{":v": str(vrec.TaskARN)}}}}})
		if code := testkit.ErrorCode(err); code != "AccessDeniedException" {
			t.Errorf("TransactWriteItems of its record's task: %v (%s), want AccessDeniedException", err, code)
		}
		if got := victimState(t, s, user); string(got) != string(mine) {
			t.Errorf("a refused rewrite changed the attacker's items:\n got %s\nwant %s", got, mine)
		}
		// What it may write, pointed at the victim where it can be.
		_, err = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: table, Key: own,
			UpdateExpression:          aws.String("SET leaseDeadline = :d, endpoint = :e, gatewayToken = :g"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":d": past, ":e": str(vrec.Endpoint), ":g": str("forged")}})
		if err != nil {
			t.Fatalf("the attacker's own lease deadline, endpoint and gateway token: %v", err)
		}
		if sb := s.WaitState(t, user, reply, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) }); sb.TaskARN != rec.TaskARN {
			t.Errorf("the attacker's record names %s, want its own task %s", sb.TaskARN, rec.TaskARN)
		}
	}

	// stoppedFor waits until ECS was asked to stop task arn with reason.
	stoppedFor := func(t *testing.T, arn, reason string) {
		t.Helper()
		var last string
		testkit.Eventually(t, reply, func() bool {
			out, err := s.ECSClient().DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(s.Cluster), Tasks: []string{arn}})
			if err != nil || len(out.Tasks) != 1 {
				last = fmt.Sprint(out, err)
				return false
			}
			task := out.Tasks[0]
			last = aws.ToString(task.DesiredStatus) + " " + aws.ToString(task.StoppedReason)
			return aws.ToString(task.DesiredStatus) == "STOPPED" && aws.ToString(task.StoppedReason) == reason
		}, func() string { return "the attacker's own task was not asked to stop: " + last })
	}

	t.Run("reaped by cleanup", func(t *testing.T) {
		user := "user_forgereap"
		s.DialReady(t, user, coldStart)
		rec := s.Running(t, user, reply)
		forge(t, user, rec)
		if sum := invokeCleanup(t, s, "CleanupFunction"); sum.Reaped != 1 || sum.Errors != 0 {
			t.Fatalf("cleanup %+v, want the attacker reaped and no error", sum)
		}
		// The reap asked ECS to stop a task before cleanup answered: never the victim's.
		victimUntouched(t)
		stoppedFor(t, rec.TaskARN, "sandgate: lease expired")
		if sb := s.Stopped(t, user, reply); sb.TaskARN != rec.TaskARN {
			t.Fatalf("the reaped record names %s, want %s", sb.TaskARN, rec.TaskARN)
		}
	})

	t.Run("taken over by a start", func(t *testing.T) {
		user := "user_forgetakeover"
		s.DialReady(t, user, coldStart)
		rec := s.Running(t, user, reply)
		forge(t, user, rec)
		s.Dial(t, user)
		repl := replaced(t, s, user, rec)
		// The start asked ECS to stop the replaced task before its sandbox was running.
		victimUntouched(t)
		stoppedFor(t, rec.TaskARN, fmt.Sprintf("sandgate: lease taken over by generation %d", repl.Generation))
	})

	// The counter holds the victim's slot and the new sandbox's, and only those.
	s.ExactCapacity(t, 2)
	victimUntouched(t)
	vc.Note("still here", reply)
}
