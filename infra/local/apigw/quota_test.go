package apigw_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/lambdart"
)

// The account's new-connection quota: handshakes past it are refused with 429 before
// the authorizer runs (nothing is invoked for them), as API Gateway refuses them; the
// refusals are counted.
func TestServer_NewConnectionRate_ThrottlesBeforeAuthorizer(t *testing.T) {
	st := newStack(t, func(s *apigw.Server, _ map[string]lambdart.Function) {
		s.NewConnectionRate, s.NewConnectionBurst = 0.001, 3
	})
	for i := range 3 {
		if _, err := st.dial(t, "user=u"+string(rune('a'+i))); err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
	}
	before := len(st.eventsOf("AuthFunction", ""))
	_, err := st.dial(t, "user=ud")
	var de *dialError
	if !errors.As(err, &de) || de.status != http.StatusTooManyRequests {
		t.Fatalf("past the quota: %v, want 429", err)
	}
	if got := len(st.eventsOf("AuthFunction", "")); got != before {
		t.Fatalf("the authorizer ran %d times for a throttled handshake", got-before)
	}
	if n := st.srv.ConnectionsThrottled(); n != 1 {
		t.Fatalf("%d throttles counted", n)
	}
}
