package state_test

import (
	"context"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// namesUpdates is the Store's client with the attribute names of every update it
// sends (alone or in a transaction) gathered: the keys and every name its expressions
// carry, as IAM's dynamodb:Attributes may count them.
type namesUpdates struct {
	state.API
	names map[string]bool
}

func (n *namesUpdates) add(key map[string]types.AttributeValue, names map[string]string) {
	for k := range key {
		n.names[k] = true
	}
	for _, v := range names {
		n.names[v] = true
	}
}

func (n *namesUpdates) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	n.add(in.Key, in.ExpressionAttributeNames)
	return n.API.UpdateItem(ctx, in, opts...)
}

func (n *namesUpdates) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	for _, it := range in.TransactItems {
		if u := it.Update; u != nil {
			n.add(u.Key, u.ExpressionAttributeNames)
		}
	}
	return n.API.TransactWriteItems(ctx, in, opts...)
}

// The attributes SandboxRole lets a sandbox name in an update are exactly those its
// agent's writes name: every write the agent makes (its lease's whole life, its inbox
// acknowledged) names only HolderAttributes, and each of them is named by one. The
// record's task, its user and the control plane's marks are never among them.
func TestHolderAttributes_ExactlyWhatTheAgentWrites(t *testing.T) {
	db := testkit.NewDB(t)
	ctx := context.Background()
	admin := db.Store()
	rec := &namesUpdates{API: db.Client, names: map[string]bool{}}
	agent := state.New(rec, db.Table)
	agent.Now = db.Clock.Now

	user := "user_holder"
	l, err := admin.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.SetTask(ctx, l, "arn:aws:ecs:us-east-1:000000000000:task/c/1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"one", "two"} {
		if _, err := admin.Enqueue(ctx, user, "conn", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	// What the agent does, start to stop (agent.Store: LeaseStore and InboxStore).
	if _, err := agent.Get(ctx, user); err != nil {
		t.Fatal(err)
	}
	if l, err = agent.Heartbeat(ctx, l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if l, err = agent.MarkReady(ctx, l, "http://10.0.0.1:8080", "gateway-token"); err != nil {
		t.Fatal(err)
	}
	items, err := agent.Inbox(ctx, user)
	if err != nil || len(items) != 2 {
		t.Fatalf("inbox %v, %v", items, err)
	}
	for _, it := range items {
		if err := agent.Ack(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	if l, err = agent.Heartbeat(ctx, l, db.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := agent.RecordSync(ctx, l, state.SyncReceipt{Time: db.Clock.Now(), Generation: l.Generation, Files: 1, Bytes: 2, Digest: "d"}); err != nil {
		t.Fatal(err)
	}
	if err := agent.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := agent.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	// Abort, the other way a holder ends its lease.
	l2, err := admin.Acquire(ctx, "user_holder2")
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Abort(ctx, l2, "start failed"); err != nil {
		t.Fatal(err)
	}

	var got []string
	for n := range rec.names {
		got = append(got, n)
	}
	want := slices.Clone(state.HolderAttributes)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the agent's writes name %q;\nHolderAttributes (and SandboxRole) list %q", got, want)
	}
	for _, never := range []string{"taskArn", "userId", "warm", "purgeStarted", "restartFor"} {
		if slices.Contains(state.HolderAttributes, never) {
			t.Errorf("HolderAttributes lets a sandbox write %s", never)
		}
	}
}

// A record is its key's user's, whatever its userId attribute says: a record whose
// userId was rewritten to another user's is still read, and listed, as its key's.
func TestStore_RecordUser_IsTheKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mustAcquire(t, e.store, "user_a")
	if _, err := e.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(e.table), Key: key("USER#user_a", "SANDBOX"),
		UpdateExpression:          aws.String("SET userId = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": &types.AttributeValueMemberS{Value: "user_b"}},
	}); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.UserID != "user_a" {
		t.Fatalf("Get: user %q, want user_a", sb.UserID)
	}
	var listed []string
	if err := e.store.ListSandboxes(ctx, func(sb *state.Sandbox) error {
		listed = append(listed, sb.UserID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, []string{"user_a"}) {
		t.Fatalf("listed %q, want [user_a]", listed)
	}
}
