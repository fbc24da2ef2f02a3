package agentapi_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/sandgate/sandgate/internal/agentapi"
)

// A pool task takes one claim, and only with its secret: racing claimers get one
// acceptance between them, the rest a refusal, never two users.
func TestClaim_OnceWithTheSecret(t *testing.T) {
	claims := make(chan agentapi.Claim, 10)
	srv := httptest.NewServer(agentapi.NewClaimServer("the-secret", func(c agentapi.Claim) { claims <- c }))
	defer srv.Close()
	var c agentapi.Client
	ctx := context.Background()
	good := agentapi.Claim{UserID: "user_a", Generation: 3, LeaseToken: "tok"}

	if err := c.Claim(ctx, srv.URL, "wrong-secret", good); !errors.Is(err, agentapi.ErrClaimRefused) {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := c.Claim(ctx, srv.URL, "the-secret", agentapi.Claim{UserID: "nobody", Generation: 1, LeaseToken: "t"}); !errors.Is(err, agentapi.ErrClaimRefused) {
		t.Fatalf("bad user id: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		claim := good
		claim.UserID = []string{"user_a", "user_b"}[i%2]
		wg.Go(func() { errs <- c.Claim(ctx, srv.URL, "the-secret", claim) })
	}
	wg.Wait()
	close(errs)
	accepted := 0
	for err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, agentapi.ErrClaimRefused):
			t.Fatalf("claim: %v", err)
		}
	}
	if accepted != 1 || len(claims) != 1 {
		t.Fatalf("%d claims accepted, %d handed over; want 1", accepted, len(claims))
	}
	if got := <-claims; got.Generation != 3 || got.LeaseToken != "tok" {
		t.Fatalf("claim handed over: %+v", got)
	}
}

// An unreachable pool task is unavailable, not a refusal: the claimer falls back.
func TestClaim_Unreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	var c agentapi.Client
	err := c.Claim(context.Background(), url, "s", agentapi.Claim{UserID: "user_a", Generation: 1, LeaseToken: "t"})
	if !errors.Is(err, agentapi.ErrUnavailable) || errors.Is(err, agentapi.ErrClaimRefused) {
		t.Fatalf("unreachable: %v", err)
	}
}
