package authorizer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
)

// What the revocation check costs a connect, against DynamoDB Local: the URL's
// verification with and without it, and, as the same run's baseline, the first thing
// Connect does with every connect (AdmitConnection, one conditional UpdateItem). The
// check is one strongly consistent GetItem; revocation/admission is its cost in
// admissions. Frames on an open connection never pay it.
func BenchmarkRevoking_ConnectPath(b *testing.B) {
	db := testkit.NewDB(b)
	store := db.Store()
	store.Now = time.Now
	store.ConnectLimits.Burst, store.ConnectLimits.MaxConnections = 1<<30, 1<<30
	store.ConnectLimits.Interval = time.Millisecond
	ctx := context.Background()
	v, err := auth.NewVerifier([]string{local.DevSecret})
	if err != nil {
		b.Fatal(err)
	}
	r := &authorizer.Revoking{Verifier: authorizer.Static(v), Revocations: store,
		MaxLifetime: auth.DefaultMaxLifetime, ClockSkew: auth.DefaultClockSkew}
	if _, err := store.Revoke(ctx, "user_bench", time.Now().Add(-time.Hour)); err != nil {
		b.Fatal(err)
	}
	q := queryAt(b, "user_bench", time.Now(), auth.DefaultTTL)
	var verify, check, admit time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if _, err := v.VerifyQuery(q); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := r.VerifyQuery(ctx, q); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := store.AdmitConnection(ctx, fmt.Sprintf("user_b%d", i%64), fmt.Sprintf("c%d", i)); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		verify, check, admit = verify+t1.Sub(t0), check+t2.Sub(t1), admit+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(verify.Microseconds())/n, "µs-verify/op")
	b.ReportMetric(float64(check.Microseconds())/n, "µs-verify+revocation/op")
	b.ReportMetric(float64(admit.Microseconds())/n, "µs-admission/op")
	b.ReportMetric(float64(check-verify)/float64(admit), "revocation/admission")
}
