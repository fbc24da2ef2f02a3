package state_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/state"
)

// A revocation is one UpdateItem, read back by NotBefore; it never moves back, and it
// keeps the access item alive past it even when connects had set a shorter TTL.
func TestStore_Revoke_OnlyForward(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if nb, err := e.store.NotBefore(ctx, "user_a"); err != nil || !nb.IsZero() {
		t.Fatalf("never revoked: %v, %v", nb, err)
	}
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c0"); err != nil {
		t.Fatal(err)
	}
	first := e.clock.Now().Add(time.Minute)
	e.calls.Reset()
	got, err := e.store.Revoke(ctx, "user_a", first)
	if err != nil || !got.Equal(time.UnixMilli(first.UnixMilli())) {
		t.Fatalf("revoke: %v, %v", got, err)
	}
	e.wantCalls(t, map[string]int64{"UpdateItem": 1})
	if got, err := e.store.Revoke(ctx, "user_a", first.Add(-time.Second)); err != nil || !got.Equal(time.UnixMilli(first.UnixMilli())) {
		t.Fatalf("an earlier revocation: %v, %v (want the recorded one kept)", got, err)
	}
	later := first.Add(time.Hour)
	if got, err := e.store.Revoke(ctx, "user_a", later); err != nil || !got.Equal(time.UnixMilli(later.UnixMilli())) {
		t.Fatalf("a later revocation: %v, %v", got, err)
	}
	if nb, err := e.store.NotBefore(ctx, "user_a"); err != nil || !nb.Equal(time.UnixMilli(later.UnixMilli())) {
		t.Fatalf("NotBefore = %v, %v", nb, err)
	}
	item := e.raw(t, "ACCESS#user_a", "ACCESS")
	if exp := attrN(t, item, state.AttrTTL); exp < later.Add(e.store.ConnectionTTL).Unix() {
		t.Errorf("TTL %d lies before the revocation plus ConnectionTTL", exp)
	}
	// The limits are untouched.
	if a, err := e.store.Access(ctx, "user_a"); err != nil || len(a.Conns) != 1 {
		t.Fatalf("access after revoking: %+v, %v", a, err)
	}
	if _, err := e.store.Revoke(ctx, "", later); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("empty user id: %v", err)
	}
}

// Erasing a user's items deletes everything of theirs but the record (which
// FinishPurge deletes) and leaves the access item holding the revocation alone;
// another user's items are untouched. It needs the purge lock.
func TestStore_EraseUserItems_EverythingOfTheUserOnly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_a", "user_b"} {
		if _, err := e.store.AdmitConnection(ctx, u, "c-"+u); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.AddConnection(ctx, u, "c-"+u); err != nil {
			t.Fatal(err)
		}
		l, err := e.store.Acquire(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Enqueue(ctx, u, "c-"+u, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := e.store.AddSpend(ctx, u, "model", e.clock.Now(), 10); err != nil {
			t.Fatal(err)
		}
		if err := e.store.Release(ctx, l, "test"); err != nil {
			t.Fatal(err)
		}
	}
	before, err := e.store.UserItems(ctx, "user_b")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.store.UserItems(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	want := "[ACCESS#user_a / ACCESS USER#user_a / CONN#c-user_a USER#user_a / INBOX#<seq> USER#user_a / INBOXMETA USER#user_a / SANDBOX USER#user_a / SPEND#model]"
	if regexp.MustCompile(`INBOX#[0-9]+`).ReplaceAllString(fmt.Sprint(keys), "INBOX#<seq>") != want {
		t.Fatalf("UserItems = %v\nwant %s", keys, want)
	}
	if _, err := e.store.Revoke(ctx, "user_a", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	l, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.EraseUserItems(ctx, state.Lease{UserID: "user_a", Token: "wrong", Generation: l.Generation}); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("erase without the lock: %v", err)
	}
	deleted, err := e.store.EraseUserItems(ctx, l)
	if err != nil || len(deleted) != 5-1 {
		t.Fatalf("erase: %v, %v", deleted, err)
	}
	if err := e.store.FinishPurge(ctx, l); err != nil {
		t.Fatal(err)
	}
	if keys, err := e.store.UserItems(ctx, "user_a"); err != nil || fmt.Sprint(keys) != "[ACCESS#user_a / ACCESS]" {
		t.Fatalf("left of user_a: %v, %v", keys, err)
	}
	item := e.raw(t, "ACCESS#user_a", "ACCESS")
	for name := range item {
		switch name {
		case state.AttrPK, state.AttrSK, state.AttrTTL, "notBefore":
		default:
			t.Errorf("the erased user's access item keeps %q", name)
		}
	}
	if nb, err := e.store.NotBefore(ctx, "user_a"); err != nil || nb.IsZero() {
		t.Errorf("the revocation did not survive the erasure: %v, %v", nb, err)
	}
	after, err := e.store.UserItems(ctx, "user_b")
	if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("user_b's items changed: %v → %v (%v)", before, after, err)
	}
}

func attrN(tb testing.TB, item map[string]types.AttributeValue, name string) int64 {
	tb.Helper()
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		tb.Fatalf("no number %s in %v", name, item)
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
