package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
)

// DynamoDB stopped mid-traffic: every frame sent meanwhile is answered, never met with
// silence — by its echo when the Message function still holds the running sandbox's
// record (the agent needs no table to relay), or by an `unavailable` error frame — and a
// new connection is refused at the handshake; once it is back, the same sandboxes serve
// again and the capacity counter still equals the sandboxes that hold a slot.
func TestChaos_DynamoDBStopped_ErrorFramesThenRecovery(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Persist = true                   // the restarted emulator keeps the table
		o.Overrides["LEASE_TTL"] = "60s"   // the outage is shorter than a lease
		o.Overrides["SLEEP_AFTER"] = "10m" // nothing stops for being idle meanwhile
	})
	users := []string{"user_ddbA", "user_ddbB"}
	clients := map[string]*testkit.Client{}
	for _, u := range users {
		clients[u] = s.Dial(t, u)
	}
	before := map[string]string{}
	for _, u := range users {
		clients[u].Status(frames.Ready, coldStart)
		clients[u].Send("warm " + u)
		clients[u].Next(reply, "echo", func(f string) bool { return f == "warm "+u })
		before[u] = s.Running(t, u, reply).TaskARN
	}
	s.ExactCapacity(t, 2)

	if err := s.DynamoDB.Stop(); err != nil {
		t.Fatal(err)
	}
	const during = 3
	a := clients[users[0]]
	for i := range during {
		a.Send(fmt.Sprintf("while down %d", i))
	}
	echoed, refused := 0, 0
	for range during {
		f := a.Next(reply, "an echo or an error frame", func(f string) bool {
			return strings.HasPrefix(f, "while down") || testkit.IsError(f)
		})
		if strings.HasPrefix(f, "while down") {
			echoed++
			continue
		}
		if pf, _ := testkit.Platform(f); pf.Reason != frames.ReasonUnavailable {
			t.Fatalf("frame while DynamoDB is down: %s, want its echo or reason unavailable", f)
		}
		refused++
	}
	t.Logf("while DynamoDB was down: %d frames echoed, %d refused as unavailable", echoed, refused)
	// A connection cannot be recorded: the handshake is refused, not left hanging.
	_, err := s.TryDial(t, "user_ddbC")
	var he *testkit.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("connect while DynamoDB is down: %v, want a refused handshake", err)
	}

	if err := s.DynamoDB.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		clients[u].Send("back " + u)
		clients[u].Next(reply, "echo after the restart", func(f string) bool { return f == "back "+u })
		if sb := s.Running(t, u, reply); sb.TaskARN != before[u] {
			t.Fatalf("%s: served by %s after the outage, want the same sandbox %s", u, sb.TaskARN, before[u])
		}
	}
	s.ExactCapacity(t, 2)
	// The refused user connects now.
	s.DialReady(t, "user_ddbC", coldStart)
	s.ExactCapacity(t, 3)
}
