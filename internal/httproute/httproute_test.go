package httproute_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/httproute"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// probe is the smallest function over the shared pieces: the signed user's Body.
type probe struct {
	v   httproute.Verifier
	log *testkit.Logs
}

func (p *probe) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := httproute.RequireMethod(req, http.MethodGet); resp != nil {
		return *resp, nil
	}
	userID, refused := httproute.Verify(ctx, p.v, p.log.Logger(), req)
	if refused != nil {
		return *refused, nil
	}
	return httproute.Respond(http.StatusOK, httproute.Describe(userID, nil, time.Now())), nil
}

// startProbe serves the probe as GET /probe on the local HTTP API, as API Gateway would.
func startProbe(t *testing.T) (base string, logs *testkit.Logs) {
	t.Helper()
	logs = &testkit.Logs{}
	v := testkit.DevVerifier(t)
	p := &probe{v: v, log: logs}
	gw := apigw.New(apigw.Config{HTTP: &apigw.HTTPAPI{Stage: testkit.Stage, Routes: []apigw.HTTPRoute{
		{Method: "GET", Path: "/probe", Function: "probe"},
	}}}, testkit.Funcs{"probe": testkit.Handler(p.Handle)}, logs.Logger())
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw.HTTPURL(), logs
}

// get makes one request through the gateway and decodes the JSON answer.
func get(t *testing.T, base, rawQuery string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(base + "/probe?" + rawQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%d %q is not JSON", resp.StatusCode, b)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
		t.Fatalf("content type %q, cache control %q", ct, cc)
	}
	return resp.StatusCode, m
}

// Every bad signature in the raw query string, as the HTTP API delivers it, is a bare
// 401; the log names the reason and the route, never the signature.
func TestVerify_Refusals(t *testing.T) {
	base, logs := startProbe(t)
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	good, err := signer.Sign("user_a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.NewSigner(strings.Repeat("x", auth.MinSecretBytes))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Sign("user_a")
	old := *signer
	old.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	expired, _ := old.Sign("user_a")
	cases := map[string]struct{ query, reason string }{
		"no query":      {"", "malformed"},
		"forged":        {forged.Query(), "bad_signature"},
		"expired":       {expired.Query(), "expired"},
		"other user":    {strings.Replace(good.Query(), "user_a", "user_b", 1), "bad_signature"},
		"duplicate id":  {"userId=user_b&" + good.Query(), "malformed"},
		"duplicate sig": {good.Query() + "&sig=" + good.Sig, "malformed"},
		"bad encoding":  {good.Query() + "&%zz", "malformed"},
		"missing sig":   {strings.Split(good.Query(), "&sig=")[0], "malformed"},
	}
	want := map[string]int{}
	for name, c := range cases {
		code, body := get(t, base, c.query)
		if code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
			t.Errorf("%s: %d %v", name, code, body)
		}
		want[c.reason]++
	}
	for reason, n := range want {
		lines := logs.With(t, logging.Reason, reason)
		if len(lines) != n {
			t.Errorf("%d refusals logged with reason %s, want %d", len(lines), reason, n)
		}
		for _, l := range lines {
			if l[logging.Route] != "GET /probe" || l[slog.LevelKey] != "WARN" {
				t.Errorf("refusal line %v", l)
			}
		}
	}
	if out := logs.String(); strings.Contains(out, good.Sig) || strings.Contains(out, forged.Sig) {
		t.Fatal("a signature reached the log")
	}
	code, body := get(t, base, good.Query())
	if code != 200 || body["userId"] != "user_a" || body["state"] != "STOPPED" {
		t.Fatalf("signed: %d %v", code, body)
	}
}

func TestRequireMethod(t *testing.T) {
	var req events.APIGatewayV2HTTPRequest
	req.RequestContext.HTTP.Method = "GET"
	if resp := httproute.RequireMethod(req, "GET"); resp != nil {
		t.Fatalf("GET refused: %+v", resp)
	}
	resp := httproute.RequireMethod(req, "POST")
	if resp == nil || resp.StatusCode != 405 || resp.Headers["Allow"] != "POST" || resp.Body != `{"error":"method not allowed"}` {
		t.Fatalf("%+v", resp)
	}
}

// A dead holder reads as STOPPED; ready only while a RUNNING lease lives.
func TestDescribe(t *testing.T) {
	now := time.Now()
	since := now.Add(-time.Minute)
	live := now.Add(time.Minute)
	for name, c := range map[string]struct {
		sb    *state.Sandbox
		state string
		ready bool
	}{
		"no sandbox": {nil, "STOPPED", false},
		"running":    {&state.Sandbox{State: state.Running, StateSince: since, LeaseDeadline: live}, "RUNNING", true},
		"starting":   {&state.Sandbox{State: state.Starting, StateSince: since, LeaseDeadline: live}, "STARTING", false},
		"dead":       {&state.Sandbox{State: state.Running, StateSince: since, LeaseDeadline: now.Add(-time.Second)}, "STOPPED", false},
	} {
		b := httproute.Describe("user_a", c.sb, now)
		if b.UserID != "user_a" || b.State != c.state || b.Ready != c.ready || (c.sb == nil) != (b.Since == nil) || b.Queued != nil {
			t.Errorf("%s: %+v", name, b)
		}
		if b.Since != nil && (!b.Since.Equal(since) || b.Since.Location() != time.UTC) {
			t.Errorf("%s: since %v", name, b.Since)
		}
	}
}
