package lambdart_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/lambdart"
)

// The account's concurrency quota: with AccountConcurrency 12 and 4 reserved for
// "Auth", the unreserved functions together get 8 invocations in flight — waiting
// for a process counts, as they would run in Lambda — and the ninth is throttled with
// Lambda's own answer (429 TooManyRequestsException, Reason
// ConcurrentInvocationLimitExceeded) through the Invoke API, while Auth still serves
// up to its reservation, past which it is throttled with its own reason. The
// statistics count invocations, throttles and the peak.
func TestRuntime_AccountConcurrency_ThrottlesUnreservedKeepsReserved(t *testing.T) {
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.AccountConcurrency, rt.UnreservedMinimum = 12, 2
	}, lambdart.Function{Name: "A", MaxConcurrency: 3, Timeout: 10 * time.Second},
		lambdart.Function{Name: "B", MaxConcurrency: 3, Timeout: 10 * time.Second},
		lambdart.Function{Name: "Auth", MaxConcurrency: 4, Timeout: 10 * time.Second})
	four := 4
	if err := h.rt.SetReservedConcurrency("Auth", &four); err != nil {
		t.Fatal(err)
	}
	eleven := 11
	if err := h.rt.SetReservedConcurrency("A", &eleven); !errors.Is(err, lambdart.ErrReservation) {
		t.Fatalf("a reservation leaving 1 of 12 unreserved (minimum 2): %v", err)
	}
	srv := httptest.NewServer(h.rt.Handler())
	t.Cleanup(srv.Close)
	api := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("k", "s", "")})

	release := make(chan struct{})
	var wg sync.WaitGroup
	hold := func(fn string, n int) {
		for range n {
			wg.Go(func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go func() { <-release; cancel() }()
				_, _ = h.invoke(ctx, fn, map[string]any{"op": "sleep", "ms": 20000})
			})
		}
	}
	hold("A", 5)
	hold("B", 3)
	waitInFlight(t, h.rt, map[string]int{"A": 5, "B": 3})

	_, err := h.invoke(context.Background(), "B", map[string]any{"op": "echo"})
	var te *lambdart.ThrottleError
	if !errors.As(err, &te) || te.Reason != lambdart.ReasonAccount || te.Limit != 8 {
		t.Fatalf("ninth unreserved invocation: %v", err)
	}
	_, err = api.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("A"), Payload: []byte(`{"op":"echo"}`)})
	var tmr *types.TooManyRequestsException
	if !errors.As(err, &tmr) || string(tmr.Reason) != lambdart.ReasonAccount || tmr.ErrorCode() != "TooManyRequestsException" {
		t.Fatalf("Invoke API over the account's concurrency: %v", err)
	}
	// The reserved function serves while the others are throttled, up to its reservation.
	if r, err := h.invoke(context.Background(), "Auth", map[string]any{"op": "echo", "value": "x"}); err != nil || r.Value != "x" {
		t.Fatalf("reserved function: %+v, %v", r, err)
	}
	hold("Auth", 4)
	waitInFlight(t, h.rt, map[string]int{"Auth": 4})
	if _, err := h.invoke(context.Background(), "Auth", map[string]any{"op": "echo"}); !errors.As(err, &te) || te.Reason != lambdart.ReasonReserved {
		t.Fatalf("past its reservation: %v", err)
	}
	close(release)
	wg.Wait()
	// Released, the unreserved functions serve again.
	if _, err := h.invoke(context.Background(), "B", map[string]any{"op": "echo"}); err != nil {
		t.Fatal(err)
	}
	a, _ := h.rt.Stats("A")
	b, _ := h.rt.Stats("B")
	if a.Peak != 5 || a.Throttles != 1 || b.Peak != 3 || b.Throttles != 1 || b.Invocations != 4 || b.InFlight != 0 || b.Busy <= 0 {
		t.Fatalf("stats A %+v, B %+v", a, b)
	}
}

// An asynchronous invocation throttled by the account's concurrency is kept and run
// once there is room, as Lambda keeps a throttled event.
func TestRuntime_AccountConcurrency_AsyncKeptUntilRoom(t *testing.T) {
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.AccountConcurrency, rt.UnreservedMinimum = 1, 1
		rt.AsyncRetryDelay = 20 * time.Millisecond
	}, lambdart.Function{Name: "A", Timeout: 10 * time.Second})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = h.invoke(context.Background(), "A", map[string]any{"op": "sleep", "ms": 400})
	}()
	waitInFlight(t, h.rt, map[string]int{"A": 1})
	if err := h.rt.InvokeAsync("A", []byte(`{"op":"echo","value":"later"}`)); err != nil {
		t.Fatal(err)
	}
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := h.rt.Stats("A")
		if st.Invocations == 2 && st.InFlight == 0 {
			if st.Throttles == 0 {
				t.Fatal("the event was never throttled")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the throttled event never ran: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitInFlight(t *testing.T, rt *lambdart.Runtime, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for fn, n := range want {
			if st, _ := rt.Stats(fn); st.InFlight != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight never reached %v", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
