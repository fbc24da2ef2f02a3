package authorizer_test

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/secretcache"
)

// queryAt is a URL for user signed at t with ttl.
func queryAt(t testing.TB, user string, at time.Time, ttl time.Duration) url.Values {
	t.Helper()
	exp := at.Add(ttl).Unix()
	return url.Values{"userId": {user}, "exp": {strconv.FormatInt(exp, 10)},
		"sig": {auth.Signature([]byte(local.DevSecret), user, exp)}}
}

// A revoked user's URLs that may have been signed before the revocation are refused,
// whatever lifetime they were signed with; a URL signed after it is accepted once its
// exp lies beyond what any earlier one could carry (at once with the full lifetime,
// after the difference with a shorter one); other users are untouched. Each
// verification reads the revocation once.
func TestRevoking_RefusesWhatMayPredateTheRevocation(t *testing.T) {
	db := testkit.NewDB(t)
	store := db.Store()
	ctx := context.Background()
	clock := db.Clock
	v, err := auth.NewVerifier([]string{local.DevSecret})
	if err != nil {
		t.Fatal(err)
	}
	v.Now = clock.Now
	const maxLife, skew = 15 * time.Minute, 30 * time.Second
	r := &authorizer.Revoking{Verifier: authorizer.Static(v), Revocations: store, MaxLifetime: maxLife, ClockSkew: skew}

	before := queryAt(t, "user_a", clock.Now(), maxLife)
	short := queryAt(t, "user_a", clock.Now(), auth.DefaultTTL)
	if _, err := r.VerifyQuery(ctx, before); err != nil {
		t.Fatalf("never revoked: %v", err)
	}
	clock.Advance(time.Second)
	nb, err := store.Revoke(ctx, "user_a", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	db.Calls.Reset()
	for name, q := range map[string]url.Values{"full lifetime": before, "default lifetime": short} {
		if _, err := r.VerifyQuery(ctx, q); !errors.Is(err, auth.ErrRevoked) || authorizer.Reason(err) != "revoked" {
			t.Errorf("%s URL signed before the revocation: %v", name, err)
		}
	}
	if n := db.Calls.Calls("DynamoDB", "GetItem"); n != 2 {
		t.Errorf("%d GetItem calls for two verifications, want 2", n)
	}
	// Signed after, within the skew: its exp could still come from a clock ahead.
	if _, err := r.VerifyQuery(ctx, queryAt(t, "user_a", clock.Now(), maxLife)); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("signed within the skew after the revocation: %v", err)
	}
	clock.Advance(auth.AcceptedFrom(nb, maxLife, maxLife, skew).Sub(clock.Now()))
	if _, err := r.VerifyQuery(ctx, queryAt(t, "user_a", clock.Now(), maxLife)); err != nil {
		t.Errorf("a fresh URL of the full lifetime at %s: %v", clock.Now(), err)
	}
	if _, err := r.VerifyQuery(ctx, queryAt(t, "user_a", clock.Now(), auth.DefaultTTL)); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("a fresh URL of the default lifetime before its time: %v", err)
	}
	clock.Advance(auth.AcceptedFrom(nb, auth.DefaultTTL, maxLife, skew).Sub(clock.Now()))
	if _, err := r.VerifyQuery(ctx, queryAt(t, "user_a", clock.Now(), auth.DefaultTTL)); err != nil {
		t.Errorf("a fresh URL of the default lifetime at %s: %v", clock.Now(), err)
	}
	if _, err := r.VerifyQuery(ctx, queryAt(t, "user_b", nb.Add(-time.Minute), maxLife)); err != nil {
		t.Errorf("another user: %v", err)
	}
}

// A revocation that cannot be read admits no one, and calls no URL bad.
func TestRevoking_TableUnavailable(t *testing.T) {
	v, err := auth.NewVerifier([]string{local.DevSecret})
	if err != nil {
		t.Fatal(err)
	}
	r := &authorizer.Revoking{Verifier: authorizer.Static(v), Revocations: failing{},
		MaxLifetime: auth.DefaultMaxLifetime, ClockSkew: auth.DefaultClockSkew}
	_, err = r.VerifyQuery(context.Background(), queryAt(t, "user_a", time.Now(), time.Minute))
	if !errors.Is(err, secretcache.ErrUnavailable) {
		t.Fatalf("unreadable revocation: %v", err)
	}
}

type failing struct{}

func (failing) NotBefore(context.Context, string) (time.Time, error) {
	return time.Time{}, errors.New("dynamodb unavailable")
}
