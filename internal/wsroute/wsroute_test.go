package wsroute_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/wsroute"
)

func TestIdentify_FromAuthorizerContext(t *testing.T) {
	rc := events.APIGatewayWebsocketProxyRequestContext{
		ConnectionID: "c1", Stage: "prod",
		Authorizer: map[string]any{"userId": "user_alice", "principalId": "user_alice"},
	}
	c, err := wsroute.Identify(rc)
	if err != nil || c != (wsroute.Caller{UserID: "user_alice", ConnectionID: "c1", Stage: "prod"}) {
		t.Fatalf("Identify = %+v, %v", c, err)
	}
}

func TestIdentify_Refusals(t *testing.T) {
	for name, rc := range map[string]events.APIGatewayWebsocketProxyRequestContext{
		"no authorizer":        {ConnectionID: "c1"},
		"authorizer not a map": {ConnectionID: "c1", Authorizer: "user_alice"},
		"no userId":            {ConnectionID: "c1", Authorizer: map[string]any{"principalId": "user_alice"}},
		"userId not a string":  {ConnectionID: "c1", Authorizer: map[string]any{"userId": 42.0}},
		"malformed userId":     {ConnectionID: "c1", Authorizer: map[string]any{"userId": "../user_alice"}},
		"no connection":        {Authorizer: map[string]any{"userId": "user_alice"}},
	} {
		if _, err := wsroute.Identify(rc); !errors.Is(err, wsroute.ErrNoIdentity) {
			t.Errorf("%s: Identify = %v, want ErrNoIdentity", name, err)
		}
	}
}

func TestErrorFrame_EveryReasonHasAMessage(t *testing.T) {
	for _, r := range []string{frames.ReasonCapacity, frames.ReasonRateLimited, frames.ReasonTooLarge, frames.ReasonInboxFull,
		frames.ReasonStartFailed, frames.ReasonUnavailable, frames.ReasonPurging} {
		f := wsroute.ErrorFrame(r)
		if f.Type != frames.TypeError || f.Reason != r || f.Message == "" || f.Message == wsroute.ErrorFrame("nope").Message {
			t.Errorf("%s: %+v", r, f)
		}
	}
	if wsroute.OK().StatusCode != 200 || wsroute.Refused().StatusCode != 500 {
		t.Fatal("responses")
	}
}
