package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// The holder's receipt lands on the record and outlives the sandbox: a stop and the
// next start keep it; a holder whose lease was taken over records nothing.
func TestStore_RecordSync_OnTheRecordFencedAndKept(t *testing.T) {
	db := testkit.NewDB(t)
	ctx := context.Background()
	st := db.Store()
	const user = "user_receipt"
	l, err := st.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if sb, _ := st.Get(ctx, user); sb.LastSync != nil {
		t.Fatalf("a new record has receipt %+v", sb.LastSync)
	}
	r := state.SyncReceipt{Time: db.Clock.Now().Truncate(time.Millisecond), Generation: l.Generation, Files: 3, Bytes: 42, Digest: "abc"}
	if err := st.RecordSync(ctx, l, r); err != nil {
		t.Fatal(err)
	}
	if sb, _ := st.Get(ctx, user); sb.LastSync == nil || !sb.LastSync.Time.Equal(r.Time) ||
		sb.LastSync.Generation != r.Generation || sb.LastSync.Files != 3 || sb.LastSync.Bytes != 42 || sb.LastSync.Digest != "abc" {
		t.Fatalf("receipt %+v, want %+v", sb.LastSync, r)
	}
	if err := st.RecordSync(ctx, l, state.SyncReceipt{Generation: 1}); !errors.Is(err, state.ErrInvalid) {
		t.Fatalf("a receipt without a time: %v", err)
	}
	if err := st.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	db.Clock.Advance(time.Hour) // past the lease, whatever it was
	l2, err := st.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if sb, _ := st.Get(ctx, user); sb.LastSync == nil || sb.LastSync.Generation != l.Generation {
		t.Fatalf("after a stop and a start the receipt is %+v", sb.LastSync)
	}
	// The stopped holder's token no longer holds the record.
	if err := st.RecordSync(ctx, l, r); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("the old holder recorded a receipt: %v", err)
	}
	r2 := r
	r2.Generation, r2.Files = l2.Generation, 4
	if err := st.RecordSync(ctx, l2, r2); err != nil {
		t.Fatal(err)
	}
	if sb, _ := st.Get(ctx, user); sb.LastSync.Generation != l2.Generation || sb.LastSync.Files != 4 {
		t.Fatalf("receipt %+v, want the new holder's", sb.LastSync)
	}
}
