package state_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/state"
)

func enqueue(tb testing.TB, s *state.Store, user, payload string) state.InboxItem {
	tb.Helper()
	it, err := s.Enqueue(context.Background(), user, "conn1", []byte(payload))
	if err != nil {
		tb.Fatalf("Enqueue(%s, %q): %v", user, payload, err)
	}
	return it
}

func inbox(tb testing.TB, s *state.Store, user string) []state.InboxItem {
	tb.Helper()
	items, err := s.Inbox(context.Background(), user)
	if err != nil {
		tb.Fatal(err)
	}
	return items
}

func payloads(items []state.InboxItem) string {
	var p []string
	for _, it := range items {
		p = append(p, string(it.Payload))
	}
	return strings.Join(p, ",")
}

func TestStore_Enqueue_InOrderAndAck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mustAcquire(t, e.store, "user_a") // STARTING: messages are queued
	e.calls.Reset()
	first := enqueue(t, e.store, "user_a", "m0")
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 1})
	for i := 1; i < 5; i++ {
		e.clock.Advance(time.Millisecond)
		enqueue(t, e.store, "user_a", fmt.Sprintf("m%d", i))
	}
	items := inbox(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 4, "TransactWriteItems": 4, "Query": 1})
	if payloads(items) != "m0,m1,m2,m3,m4" || items[0].Seq != first.Seq || items[0].ConnectionID != "conn1" || items[0].UserID != "user_a" {
		t.Fatalf("inbox %q, first %+v", payloads(items), items[0])
	}
	for i := 1; i < len(items); i++ {
		if items[i].Seq != items[i-1].Seq+1 {
			t.Fatalf("sequence %d follows %d", items[i].Seq, items[i-1].Seq)
		}
	}
	if err := e.store.Ack(ctx, items[0]); err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"TransactWriteItems": 1})
	if err := e.store.Ack(ctx, items[0]); err != nil { // delivered twice: not an error
		t.Fatalf("second Ack = %v", err)
	}
	if err := e.store.Ack(ctx, items[2]); err != nil {
		t.Fatal(err)
	}
	if got := payloads(inbox(t, e.store, "user_a")); got != "m1,m3,m4" {
		t.Fatalf("after acks: %q", got)
	}
	if got := payloads(inbox(t, e.store, "user_b")); got != "" {
		t.Fatalf("another user's inbox: %q", got)
	}
	// The inbox counter counts what is left: fill up exactly to the bound.
	e.store.InboxMaxItems = 5
	enqueue(t, e.store, "user_a", "m5")
	enqueue(t, e.store, "user_a", "m6")
	_, err := e.store.Enqueue(ctx, "user_a", "conn1", []byte("m7"))
	wantErr(t, err, state.ErrInboxFull)
}

// Concurrent appends keep a total order in which each writer's own messages stay in
// the order it sent them, and every append is stored exactly once.
func TestStore_Enqueue_ConcurrentAppendsKeepOrder(t *testing.T) {
	e := newEnv(t) // the default retry policy must carry 8 writers on one user
	const writers, each = 8, 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := e.store.Enqueue(context.Background(), "user_a", "conn"+strconv.Itoa(w), fmt.Appendf(nil, "%d-%d", w, i)); err != nil {
					t.Errorf("writer %d message %d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	items := inbox(t, e.store, "user_a")
	if len(items) != writers*each {
		t.Fatalf("%d items, want %d", len(items), writers*each)
	}
	next := make([]int, writers)
	for i, it := range items {
		if i > 0 && it.Seq <= items[i-1].Seq {
			t.Fatalf("sequence not increasing at %d", i)
		}
		var w, n int
		fmt.Sscanf(string(it.Payload), "%d-%d", &w, &n)
		if n != next[w] || it.ConnectionID != "conn"+strconv.Itoa(w) {
			t.Fatalf("writer %d: message %d where %d was due (payload %q)", w, n, next[w], it.Payload)
		}
		next[w]++
	}
}

// Under concurrent appends the count bound admits exactly its number; the byte
// bound likewise.
func TestStore_Enqueue_BoundsUnderConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name            string
		items, maxBytes int
		payload         int
		want            int
	}{
		{name: "Items", items: 10, maxBytes: 1 << 20, payload: 10, want: 10},
		{name: "Bytes", items: 100, maxBytes: 1000, payload: 300, want: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.store.InboxMaxItems, e.store.InboxMaxBytes = tc.items, tc.maxBytes
			var mu sync.Mutex
			ok, full := 0, 0
			var wg sync.WaitGroup
			for range 24 {
				wg.Go(func() {
					_, err := e.store.Enqueue(context.Background(), "user_a", "c", bytes.Repeat([]byte("x"), tc.payload))
					var fe *state.InboxFullError
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case errors.As(err, &fe):
						if fe.MaxItems != tc.items || fe.MaxBytes != tc.maxBytes {
							t.Errorf("InboxFullError %+v", *fe)
						}
						full++
					default:
						t.Errorf("Enqueue = %v", err)
					}
				})
			}
			wg.Wait()
			if ok != tc.want || full != 24-tc.want {
				t.Fatalf("%d stored, %d refused; want %d, %d", ok, full, tc.want, 24-tc.want)
			}
			items := inbox(t, e.store, "user_a")
			if len(items) != tc.want {
				t.Fatalf("inbox holds %d", len(items))
			}
			// Ack frees room for exactly one more.
			if err := e.store.Ack(context.Background(), items[0]); err != nil {
				t.Fatal(err)
			}
			enqueue(t, e.store, "user_a", strings.Repeat("y", tc.payload))
			_, err := e.store.Enqueue(context.Background(), "user_a", "c", bytes.Repeat([]byte("z"), tc.payload))
			wantErr(t, err, state.ErrInboxFull)
		})
	}
}

func TestStore_Enqueue_TooLarge(t *testing.T) {
	e := newEnv(t)
	_, err := e.store.Enqueue(context.Background(), "user_a", "c", make([]byte, state.DefaultMaxMessageBytes+1))
	wantErr(t, err, state.ErrTooLarge)
	_, err = e.store.Enqueue(context.Background(), "", "c", nil)
	wantErr(t, err, state.ErrInvalid)
	_, err = e.store.Enqueue(context.Background(), "user_a", "", nil)
	wantErr(t, err, state.ErrInvalid)
	e.wantCalls(t, map[string]int64{})
	if got := payloads(inbox(t, e.store, "user_a")); got != "" {
		t.Fatalf("inbox %q", got)
	}
}

// Once the agent has marked the sandbox RUNNING (and drained the inbox), a message
// must go to it directly: Enqueue refuses and hands back the record.
func TestStore_Enqueue_RefusedWhenRunning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	enqueue(t, e.store, "user_a", "while starting")
	if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.9:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	_, err := e.store.Enqueue(ctx, "user_a", "c", []byte("late"))
	var re *state.RunningError
	if !errors.As(err, &re) || !errors.Is(err, state.ErrRunning) || re.Sandbox.Endpoint != "http://10.0.0.9:8080" {
		t.Fatalf("Enqueue while RUNNING = %v, want *RunningError with the endpoint", err)
	}
	if got := payloads(inbox(t, e.store, "user_a")); got != "while starting" {
		t.Fatalf("inbox %q", got)
	}
	// After a stop, messages queue again for the next start.
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	enqueue(t, e.store, "user_a", "after stop")
}

// Items past InboxTTL are not returned and stop counting once the counter's own
// expiry has passed, so an undelivered inbox cannot lock a user out until DynamoDB's
// TTL deletion runs (which may take days).
func TestStore_Inbox_ExpiryStartsNewEpoch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.store.InboxMaxItems = 3
	e.store.InboxTTL = time.Minute
	for i := range 3 {
		enqueue(t, e.store, "user_a", fmt.Sprintf("old%d", i))
	}
	old := inbox(t, e.store, "user_a")
	_, err := e.store.Enqueue(ctx, "user_a", "c", []byte("x"))
	wantErr(t, err, state.ErrInboxFull)

	e.clock.Advance(time.Minute + time.Second)
	if got := payloads(inbox(t, e.store, "user_a")); got != "" {
		t.Fatalf("expired items returned: %q", got)
	}
	n1 := enqueue(t, e.store, "user_a", "new0")
	if n1.Seq <= old[2].Seq {
		t.Fatalf("sequence went back: %d after %d", n1.Seq, old[2].Seq)
	}
	// Acknowledging an item of the expired epoch must not free room in the new one.
	if err := e.store.Ack(ctx, old[0]); err != nil {
		t.Fatal(err)
	}
	enqueue(t, e.store, "user_a", "new1")
	enqueue(t, e.store, "user_a", "new2")
	_, err = e.store.Enqueue(ctx, "user_a", "c", []byte("new3"))
	wantErr(t, err, state.ErrInboxFull)
	if got := payloads(inbox(t, e.store, "user_a")); got != "new0,new1,new2" {
		t.Fatalf("inbox %q", got)
	}
}

// The counter item itself expires (TTL) with its last item; numbering must continue
// above every number used before.
func TestStore_Inbox_CounterDeletedByTTL(t *testing.T) {
	e := newEnv(t)
	a := enqueue(t, e.store, "user_a", "a")
	e.clock.Advance(state.DefaultInboxTTL + time.Second)
	// What DynamoDB's TTL deletion does, eventually: delete the expired counter.
	if _, err := e.client.DeleteItem(context.Background(), &dynamodb.DeleteItemInput{
		TableName: aws.String(e.table),
		Key:       map[string]types.AttributeValue{state.AttrPK: &types.AttributeValueMemberS{Value: "USER#user_a"}, state.AttrSK: &types.AttributeValueMemberS{Value: "INBOXMETA"}},
	}); err != nil {
		t.Fatal(err)
	}
	b := enqueue(t, e.store, "user_a", "b")
	if b.Seq <= a.Seq {
		t.Fatalf("sequence %d after %d", b.Seq, a.Seq)
	}
	if got := payloads(inbox(t, e.store, "user_a")); got != "b" {
		t.Fatalf("inbox %q", got)
	}
}

// Every transient item carries the TTL attribute; state items do not.
func TestStore_TTLOnTransientItems(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clock.Now()
	mustAcquire(t, e.store, "user_a")
	if _, err := e.store.AddConnection(ctx, "user_a", "c1"); err != nil {
		t.Fatal(err)
	}
	it := enqueue(t, e.store, "user_a", "m")
	ttlOf := func(pk, sk string) (int64, bool) {
		item := e.raw(t, pk, sk)
		if item == nil {
			t.Fatalf("no item %s/%s", pk, sk)
		}
		v, ok := item[state.AttrTTL].(*types.AttributeValueMemberN)
		if !ok {
			return 0, false
		}
		n, _ := strconv.ParseInt(v.Value, 10, 64)
		return n, true
	}
	for _, tc := range []struct {
		sk   string
		want time.Duration
	}{
		{"CONN#c1", state.DefaultConnectionTTL},
		{fmt.Sprintf("INBOX#%020d", it.Seq), state.DefaultInboxTTL},
		{"INBOXMETA", state.DefaultInboxTTL},
	} {
		got, ok := ttlOf("USER#user_a", tc.sk)
		min, max := now.Add(tc.want).Unix(), now.Add(tc.want).Unix()+1
		if !ok || got < min || got > max {
			t.Errorf("%s: %s = %d (present %v), want %d..%d", tc.sk, state.AttrTTL, got, ok, min, max)
		}
	}
	if _, ok := ttlOf("USER#user_a", "SANDBOX"); ok {
		t.Error("the sandbox record has a TTL")
	}
	if _, ok := ttlOf("CAPACITY", "SANDBOXES"); ok {
		t.Error("the capacity counter has a TTL")
	}
}

// Enqueue reports the inbox's count with the new message, so a caller can tell the
// first message of a start from the rest; Queued reads the same count with one
// GetItem, and both follow acks and expiry.
func TestStore_Enqueue_ReportsQueued(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mustAcquire(t, e.store, "user_a")
	if n, err := e.store.Queued(ctx, "user_a"); err != nil || n != 0 {
		t.Fatalf("Queued before any message = %d, %v", n, err)
	}
	var items []state.InboxItem
	for i := 1; i <= 3; i++ {
		it := enqueue(t, e.store, "user_a", fmt.Sprintf("m%d", i))
		if it.Queued != i {
			t.Fatalf("message %d: Queued = %d", i, it.Queued)
		}
		items = append(items, it)
	}
	e.calls.Reset()
	if n, err := e.store.Queued(ctx, "user_a"); err != nil || n != 3 {
		t.Fatalf("Queued = %d, %v; want 3", n, err)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	for _, it := range items {
		if err := e.store.Ack(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := e.store.Queued(ctx, "user_a"); n != 0 {
		t.Fatalf("Queued after acking all = %d", n)
	}
	// The inbox was drained: the next message is the first again.
	if it := enqueue(t, e.store, "user_a", "m4"); it.Queued != 1 {
		t.Fatalf("after a drain: Queued = %d, want 1", it.Queued)
	}
	// Once everything counted has expired, nothing is queued and a new epoch starts at 1.
	e.clock.Advance(state.DefaultInboxTTL + time.Second)
	if n, _ := e.store.Queued(ctx, "user_a"); n != 0 {
		t.Fatalf("Queued after expiry = %d", n)
	}
	if it := enqueue(t, e.store, "user_a", "m5"); it.Queued != 1 {
		t.Fatalf("after expiry: Queued = %d, want 1", it.Queued)
	}
	if n, _ := e.store.Queued(ctx, "user_b"); n != 0 {
		t.Fatalf("another user's inbox counts %d", n)
	}
	if _, err := e.store.Queued(ctx, ""); !errors.Is(err, state.ErrInvalid) {
		t.Fatalf("Queued(\"\") = %v, want ErrInvalid", err)
	}
}

// Concurrent appends each see a distinct count: exactly one of them is the first.
func TestStore_Enqueue_QueuedUniqueUnderRace(t *testing.T) {
	e := newEnv(t)
	mustAcquire(t, e.store, "user_a")
	const n = 20
	counts := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := e.store.Enqueue(context.Background(), "user_a", "conn1", []byte(strconv.Itoa(i)))
			if err != nil {
				t.Error(err)
				return
			}
			counts <- it.Queued
		}()
	}
	wg.Wait()
	close(counts)
	seen := map[int]bool{}
	for c := range counts {
		if seen[c] || c < 1 || c > n {
			t.Fatalf("Queued %d repeated or out of range", c)
		}
		seen[c] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct counts, want %d", len(seen), n)
	}
}
