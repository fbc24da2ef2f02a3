package ecslocal_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

func wantThrottled(t *testing.T, err error) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" || ae.ErrorMessage() != "Rate exceeded" {
		t.Fatalf("RunTask = %v, want ThrottlingException: Rate exceeded", err)
	}
}

// RunTask calls past the call bucket are refused whatever their count, and start
// nothing; so are calls whose tasks the launch bucket cannot hold, all or none. The
// refill rates are slow enough that no token comes back during the test.
func TestServer_Limits_ThrottleCallsAndLaunches(t *testing.T) {
	t.Parallel()
	t.Run("calls", func(t *testing.T) {
		t.Parallel()
		e := start(t, func(s *ecslocal.Server) {
			s.Limits = &ecslocal.Limits{RunTaskRate: 0.001, RunTaskBurst: 3, TaskRate: 0.001, TaskBurst: 100}
		})
		client := newClient(t, e.srv.Endpoint(), 1)
		for i := range 3 {
			if _, err := client.RunTask(context.Background(), runInput(fmt.Sprint("call", i))); err != nil {
				t.Fatalf("call %d within the burst: %v", i+1, err)
			}
		}
		_, err := client.RunTask(context.Background(), runInput("over"))
		wantThrottled(t, err)
		if n := len(e.srv.Tasks()); n != 3 || e.srv.Throttled() != 1 {
			t.Fatalf("%d tasks, %d throttled", n, e.srv.Throttled())
		}
	})
	t.Run("launches", func(t *testing.T) {
		t.Parallel()
		e := start(t, func(s *ecslocal.Server) {
			s.Limits = &ecslocal.Limits{RunTaskRate: 0.001, RunTaskBurst: 100, TaskRate: 0.001, TaskBurst: 8}
		})
		client := newClient(t, e.srv.Endpoint(), 1)
		five := runInput("five")
		five.Count = aws.Int32(5)
		if out, err := client.RunTask(context.Background(), five); err != nil || len(out.Tasks) != 5 {
			t.Fatalf("5 of 8: %v", err)
		}
		again := runInput("again")
		again.Count = aws.Int32(5)
		_, err := client.RunTask(context.Background(), again)
		wantThrottled(t, err)
		three := runInput("three")
		three.Count = aws.Int32(3)
		if out, err := client.RunTask(context.Background(), three); err != nil || len(out.Tasks) != 3 {
			t.Fatalf("the 3 left: %v", err)
		}
		if n := len(e.srv.Tasks()); n != 8 {
			t.Fatalf("%d tasks, want the burst's 8", n)
		}
	})
}
