package notice_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/notice"
)

const fnName = "ConnectFunction"

func TestNotice_Validate(t *testing.T) {
	until := time.Now().Add(time.Minute).UnixMilli()
	for name, n := range map[string]notice.Notice{
		"connect":               {Kind: notice.KindConnect, UserID: "user_a", ConnectionID: "c1"},
		"connect with a reason": {Kind: notice.KindConnect, UserID: "user_a", ConnectionID: "c1", Reason: "capacity"},
		"restart":               {Kind: notice.KindRestart, UserID: "user_a", ConnectionID: "c1", Until: until},
		"ensure":                {Kind: notice.KindEnsure, UserID: "user_a", ConnectionID: "c1", Stage: "prod", Until: until},
		"ensure, no connection": {Kind: notice.KindEnsure, UserID: "user_a"},
	} {
		if err := n.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, n := range map[string]notice.Notice{
		"unknown kind":      {Kind: "bogus", UserID: "user_a", ConnectionID: "c1"},
		"no kind":           {UserID: "user_a", ConnectionID: "c1"},
		"no user":           {Kind: notice.KindConnect, ConnectionID: "c1"},
		"no connection":     {Kind: notice.KindConnect, UserID: "user_a"},
		"malformed user":    {Kind: notice.KindConnect, UserID: "../user_a", ConnectionID: "c1"},
		"restart, no bound": {Kind: notice.KindRestart, UserID: "user_a", ConnectionID: "c1"},
		"ensure, no user":   {Kind: notice.KindEnsure, ConnectionID: "c1"},
		"ensure, malformed": {Kind: notice.KindEnsure, UserID: "user_a/../user_b"},
	} {
		if err := n.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The payload is the wire contract: one key, sandgateNotice, holding the notice.
func TestNotifier_Send_Payload(t *testing.T) {
	inv := testkit.NewInvoker(t, testkit.Funcs{fnName: func(context.Context, []byte) ([]byte, error) { return nil, nil }})
	n := notice.Notice{Kind: notice.KindRestart, UserID: "user_a", ConnectionID: "c1", Stage: "prod", Until: 1700000000000}
	if err := (&notice.Notifier{API: inv, Function: fnName}).Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	calls := inv.Calls()
	if len(calls) != 1 || calls[0].Function != fnName || calls[0].Type != types.InvocationTypeEvent {
		t.Fatalf("calls %+v", calls)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal(calls[0].Payload, &raw); err != nil || len(raw) != 1 || raw["sandgateNotice"]["kind"] != "restart" ||
		raw["sandgateNotice"]["userId"] != "user_a" || raw["sandgateNotice"]["until"] != 1700000000000.0 {
		t.Fatalf("payload %s: %v", calls[0].Payload, err)
	}
	var env notice.Envelope
	if err := json.Unmarshal(calls[0].Payload, &env); err != nil || env.Notice == nil || *env.Notice != n {
		t.Fatalf("decoded %+v, %v", env, err)
	}
}

// Send refuses an unusable notice and reports a failed invocation.
func TestNotifier_Send_BadNotice(t *testing.T) {
	inv := testkit.NewInvoker(t, testkit.Funcs{fnName: func(context.Context, []byte) ([]byte, error) { return nil, nil }})
	s := &notice.Notifier{API: inv, Function: fnName}
	if err := s.Send(context.Background(), notice.Notice{Kind: notice.KindConnect}); err == nil {
		t.Fatal("sent a notice without a user")
	}
	err := (&notice.Notifier{API: inv, Function: "Missing"}).Send(context.Background(),
		notice.Notice{Kind: notice.KindConnect, UserID: "user_a", ConnectionID: "c1"})
	var missing *types.ResourceNotFoundException
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), "Missing") {
		t.Fatalf("invoking a missing function: %v", err)
	}
	if len(inv.Calls()) != 0 {
		t.Fatalf("calls %v", inv.Calls())
	}
}
