package state_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

func connIDs(cs []state.Connection) string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ConnectionID)
	}
	sort.Strings(ids)
	return fmt.Sprint(ids)
}

func TestStore_Connections(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clock.Now()
	c, err := e.store.AddConnection(ctx, "user_a", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !c.ConnectedAt.Equal(now) || c.ExpiresAt.Before(now.Add(2*time.Hour)) {
		t.Fatalf("connection %+v: must outlive API Gateway's 2 h limit", c)
	}
	for _, id := range []string{"c2", "c3"} {
		if _, err := e.store.AddConnection(ctx, "user_a", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.AddConnection(ctx, "user_b", "c9"); err != nil {
		t.Fatal(err)
	}
	enqueue(t, e.store, "user_a", "not a connection") // same partition, other prefix
	e.calls.Reset()
	got, err := e.store.Connections(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"Query": 1})
	if connIDs(got) != "[c1 c2 c3]" {
		t.Fatalf("connections %s", connIDs(got))
	}
	if err := e.store.RemoveConnection(ctx, "user_a", "c2"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.RemoveConnection(ctx, "user_a", "c2"); err != nil {
		t.Fatalf("removing twice = %v", err)
	}
	got, _ = e.store.Connections(ctx, "user_a")
	if connIDs(got) != "[c1 c3]" {
		t.Fatalf("after remove %s", connIDs(got))
	}
	// Past their TTL, records not yet deleted by DynamoDB are not listed.
	e.clock.Advance(state.DefaultConnectionTTL + time.Second)
	if _, err := e.store.AddConnection(ctx, "user_a", "c4"); err != nil {
		t.Fatal(err)
	}
	got, _ = e.store.Connections(ctx, "user_a")
	if connIDs(got) != "[c4]" {
		t.Fatalf("after expiry %s", connIDs(got))
	}
	_, err = e.store.Connections(ctx, "")
	wantErr(t, err, state.ErrInvalid)
	_, err = e.store.AddConnection(ctx, "user_a", "")
	wantErr(t, err, state.ErrInvalid)
}

// One connection is read with one GetItem, and only under its own user: another
// user's, an absent or an expired record is ErrNotFound.
func TestStore_Connection(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	added, err := e.store.AddConnection(ctx, "user_a", "c1")
	if err != nil {
		t.Fatal(err)
	}
	e.calls.Reset()
	c, err := e.store.Connection(ctx, "user_a", "c1")
	if err != nil || !c.ConnectedAt.Equal(added.ConnectedAt) || !c.ExpiresAt.Equal(added.ExpiresAt) || c.UserID != "user_a" {
		t.Fatalf("connection %+v, %v (added %+v)", c, err, added)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	_, err = e.store.Connection(ctx, "user_b", "c1")
	wantErr(t, err, state.ErrNotFound)
	_, err = e.store.Connection(ctx, "user_a", "c2")
	wantErr(t, err, state.ErrNotFound)
	_, err = e.store.Connection(ctx, "user_a", "")
	wantErr(t, err, state.ErrInvalid)
	e.clock.Advance(state.DefaultConnectionTTL + time.Second)
	_, err = e.store.Connection(ctx, "user_a", "c1")
	wantErr(t, err, state.ErrNotFound)
}

// A connection hears `starting` once per start: the first teller of a generation wins,
// a later generation may be told again, and a connection with no record is told
// without creating one. Many tellers at once (the connect notice and the Message function racing)
// leave exactly one winner.
func TestStore_TellStarting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.AddConnection(ctx, "user_a", "c1"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		conn string
		gen  int64
		want bool
	}{
		{"c1", 3, true},
		{"c1", 3, false},  // told already
		{"c1", 2, false},  // an older start: never after a newer one
		{"c1", 4, true},   // the next start
		{"gone", 4, true}, // no record: told, better twice than never
	} {
		got, err := e.store.TellStarting(ctx, "user_a", step.conn, step.gen)
		if err != nil || got != step.want {
			t.Fatalf("TellStarting(%s, %d) = %v, %v; want %v", step.conn, step.gen, got, err, step.want)
		}
	}
	// Recorded again (the connect notice's refresh after its first post): still told.
	if _, err := e.store.AddConnection(ctx, "user_a", "c1"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.TellStarting(ctx, "user_a", "c1", 4); err != nil || got {
		t.Fatalf("told again after the connection was recorded again: %v, %v", got, err)
	}
	if got, err := e.store.Connections(ctx, "user_a"); err != nil || connIDs(got) != "[c1]" {
		t.Fatalf("connections after telling: %s, %v (a refused tell must not create a record)", connIDs(got), err)
	}
	if _, err := e.store.TellStarting(ctx, "", "c1", 1); err == nil {
		t.Fatal("an empty user id was accepted")
	}

	if _, err := e.store.AddConnection(ctx, "user_a", "c2"); err != nil {
		t.Fatal(err)
	}
	const tellers = 16
	wins := make(chan bool, tellers)
	start := make(chan struct{})
	for range tellers {
		go func() {
			<-start
			ok, err := e.store.TellStarting(ctx, "user_a", "c2", 7)
			if err != nil {
				t.Error(err)
			}
			wins <- ok
		}()
	}
	close(start)
	n := 0
	for range tellers {
		if <-wins {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of %d racing tellers won; want exactly 1", n, tellers)
	}
}
