package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/relay"
)

// A burst of connections dying without $disconnect (their TCP connections cut while
// the gateway drops the event, as API Gateway sometimes does): the records they leave
// behind are found gone (410) and removed, every sandbox still goes idle and stops,
// and the capacity counter returns to 0.
func TestChaos_DisconnectsLost_StaleRecordsRemovedSandboxesStop(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, nil) // SLEEP_AFTER 3 s
	const users, perUser = 3, 5
	var all []*testkit.Client
	ids := map[string]bool{}
	for u := range users {
		user := fmt.Sprintf("user_lost%d", u)
		for range perUser {
			all = append(all, s.Dial(t, user))
		}
	}
	for _, c := range all {
		c.Status(frames.Ready, coldStart)
	}
	for u := range users {
		conns, err := s.Store.Connections(context.Background(), fmt.Sprintf("user_lost%d", u))
		if err != nil || len(conns) != perUser {
			t.Fatalf("user_lost%d: %d connection records, %v", u, len(conns), err)
		}
		for _, c := range conns {
			ids[c.ConnectionID] = true
		}
	}
	s.ExactCapacity(t, users)

	s.Gateway.DropDisconnects(-1)
	for _, c := range all {
		c.Conn.CloseNow() // no close handshake: the TCP connection just ends
	}
	// The gateway forgets them (410) without telling the application.
	mgmt := relay.NewClient(s.AWS, s.Gateway.ManagementEndpoint())
	for id := range ids {
		waitGone(t, mgmt, id)
	}
	left := 0
	for u := range users {
		conns, _ := s.Store.Connections(context.Background(), fmt.Sprintf("user_lost%d", u))
		left += len(conns)
	}
	if left != len(ids) {
		t.Fatalf("%d of %d records left right after the burst: was $disconnect invoked?", left, len(ids))
	}

	// The agents find the records gone once they are past their $connect grace and
	// remove them; with no live connection the sandboxes go idle and stop.
	for u := range users {
		user := fmt.Sprintf("user_lost%d", u)
		s.Stopped(t, user, 2*time.Minute)
		if conns, err := s.Store.Connections(context.Background(), user); err != nil || len(conns) != 0 {
			t.Fatalf("%s: %d records left after the stop, %v", user, len(conns), err)
		}
	}
	s.ExactCapacity(t, 0)
	testkit.Eventually(t, reply, func() bool { return len(s.ECS.Tasks()) == 0 },
		func() string { return fmt.Sprintf("%d tasks still run", len(s.ECS.Tasks())) })
}

func waitGone(t *testing.T, mgmt *apigatewaymanagementapi.Client, id string) {
	t.Helper()
	var err error
	testkit.Eventually(t, reply, func() bool {
		_, err = mgmt.GetConnection(context.Background(), &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(id)})
		var gone *types.GoneException
		return errors.As(err, &gone)
	}, func() string { return fmt.Sprintf("connection %s still known to the gateway: %v", id, err) })
}
