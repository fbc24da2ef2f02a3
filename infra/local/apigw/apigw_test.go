package apigw_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"
	"github.com/aws/smithy-go"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/state"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func TestServer_Connect_Refused(t *testing.T) {
	st := newStack(t)
	for name, tc := range map[string]struct {
		query      string
		status     int
		authorizer bool // whether the authorizer ran
		connect    bool // whether the $connect integration ran
	}{
		"deny":                 {"user=u1&mode=deny", 403, true, false},
		"authorizer error":     {"user=u2&mode=error", 500, true, false},
		"authorizer 401":       {"user=u3&mode=unauthorized", 401, true, false},
		"context not flat":     {"user=u4&mode=badctx", 500, true, false},
		"missing identity":     {"mode=allow", 401, false, false},
		"empty identity":       {"user=", 401, false, false},
		"connect non-2xx":      {"user=u5&connect=fail", 429, true, true},
		"connect lambda error": {"user=u6&connect=error", 502, true, true},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(st.eventsOf("AuthFunction", "")) + len(st.eventsOf("ConnectFunction", ""))
			_, err := st.dial(t, tc.query)
			var de *dialError
			if !errors.As(err, &de) || de.status != tc.status {
				t.Fatalf("dial: %v, want handshake status %d", err, tc.status)
			}
			want := before
			if tc.authorizer {
				want++
			}
			if tc.connect {
				want++
			}
			if got := len(st.eventsOf("AuthFunction", "")) + len(st.eventsOf("ConnectFunction", "")); got != want {
				t.Fatalf("%d authorizer+connect invocations, want %d", got-before, want-before)
			}
		})
	}
	if n := len(st.eventsOf("DisconnectFunction", "")); n != 0 {
		t.Fatalf("$disconnect ran %d times for refused handshakes", n)
	}
	refused := 0
	for _, l := range st.logs.With(t, "level", "WARN") {
		if l["status"] != nil && l["reason"] != nil && l["connectionId"] != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatalf("refusals not logged with their status and reason:\n%s", st.logs)
	}
}

// The authorizer receives exactly the keys API Gateway sends (events/authorize.json
// was captured from the real service's shape).
func TestServer_Connect_AuthorizerEventShape(t *testing.T) {
	st := newStack(t)
	_, connID := st.connect(t, "user=alice&exp=1&exp=2")
	ev := st.waitEvent(t, "AuthFunction", connID)
	b, err := os.ReadFile("../../../events/authorize.json")
	if err != nil {
		t.Fatal(err)
	}
	var sample map[string]any
	if err := json.Unmarshal(b, &sample); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedKeys(ev), sortedKeys(sample); !equal(got, want) {
		t.Errorf("authorizer event keys\n got %v\nwant %v", got, want)
	}
	rc, src := ev["requestContext"].(map[string]any), sample["requestContext"].(map[string]any)
	if got, want := sortedKeys(rc), sortedKeys(src); !equal(got, want) {
		t.Errorf("requestContext keys\n got %v\nwant %v", got, want)
	}
	if ev["type"] != "REQUEST" || !strings.HasSuffix(ev["methodArn"].(string), "/test/$connect") ||
		rc["eventType"] != "CONNECT" || rc["routeKey"] != "$connect" || rc["messageDirection"] != "IN" {
		t.Errorf("event = %v", ev)
	}
	if q := ev["multiValueQueryStringParameters"].(map[string]any); len(q["exp"].([]any)) != 2 {
		t.Errorf("duplicate parameters lost: %v", q)
	}
	if ev["queryStringParameters"].(map[string]any)["exp"] != "2" {
		t.Errorf("queryStringParameters keeps the last value: %v", ev["queryStringParameters"])
	}
	var typed events.APIGatewayWebsocketProxyRequest
	raw, _ := json.Marshal(ev)
	if err := json.Unmarshal(raw, &typed); err != nil || typed.RequestContext.ConnectionID != connID {
		t.Errorf("event does not decode as aws-lambda-go's type: %v", err)
	}
}

func TestServer_Routes_ByActionAndDefault(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	checkCommon := func(ev map[string]any, route string) {
		t.Helper()
		var typed events.APIGatewayWebsocketProxyRequest
		raw, _ := json.Marshal(ev)
		if err := json.Unmarshal(raw, &typed); err != nil {
			t.Fatal(err)
		}
		rc := typed.RequestContext
		if rc.RouteKey != route || rc.EventType != "MESSAGE" || rc.ConnectionID != connID || rc.Stage != "test" ||
			rc.APIID == "" || rc.MessageID == nil || rc.RequestID == "" || rc.Identity.SourceIP != "127.0.0.1" ||
			rc.ConnectedAt == 0 || rc.RequestTimeEpoch < rc.ConnectedAt || rc.DomainName == "" || rc.MessageDirection != "IN" {
			t.Errorf("%s request context = %+v", route, rc)
		}
		a, _ := rc.Authorizer.(map[string]any)
		if a["userId"] != "alice" || a["principalId"] != "principal-alice" || a["n"] != float64(7) || a["ok"] != true || a["integrationLatency"] == nil {
			t.Errorf("%s authorizer context = %v", route, rc.Authorizer)
		}
	}
	// A two-way custom route answers with the integration's body.
	ev := sendAndRead(t, c, `{"action":"echo","n":1}`)
	checkCommon(ev, "echo")
	if ev["body"] != `{"action":"echo","n":1}` {
		t.Errorf("body = %v", ev["body"])
	}
	for _, msg := range []string{"plain text", `{"action":"unknown"}`, `{"action":{"nested":1}}`, `[1,2]`, `{"action":"$connect"}`} {
		ev := sendAndRead(t, c, msg)
		checkCommon(ev, "$default")
		if ev["body"] != msg {
			t.Errorf("body = %v, want %q", ev["body"], msg)
		}
	}
	// The $connect integration saw the authorizer context too.
	ce := st.waitEvent(t, "ConnectFunction", connID)
	if a := ce["requestContext"].(map[string]any)["authorizer"].(map[string]any); a["userId"] != "alice" {
		t.Errorf("$connect authorizer context = %v", a)
	}
}

func TestServer_Route_IntegrationError(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	ev := sendAndRead(t, c, "fail")
	if ev["message"] != "Internal server error" || ev["connectionId"] != connID || ev["requestId"] == "" {
		t.Fatalf("error frame = %v", ev)
	}
}

func TestServer_Disconnect_ClientClose(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	if err := c.Close(4000, "bye"); err != nil {
		t.Fatal(err)
	}
	ev := st.waitEvent(t, "DisconnectFunction", connID)
	var typed events.APIGatewayWebsocketProxyRequest
	raw, _ := json.Marshal(ev)
	_ = json.Unmarshal(raw, &typed)
	rc := typed.RequestContext
	if rc.RouteKey != "$disconnect" || rc.EventType != "DISCONNECT" || rc.DisconnectStatusCode != 4000 ||
		rc.DisconnectReason == nil || *rc.DisconnectReason != "bye" || typed.Headers["Host"] == "" {
		t.Fatalf("disconnect event = %s", raw)
	}
	if a, _ := rc.Authorizer.(map[string]any); a["userId"] != "alice" {
		t.Fatalf("disconnect authorizer context = %v", rc.Authorizer)
	}
	_, err := st.mgmt.GetConnection(context.Background(), &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &connID})
	var gone *types.GoneException
	if !errors.As(err, &gone) {
		t.Fatalf("GetConnection after close: %v, want GoneException", err)
	}
}

func TestServer_DeleteConnection_DisconnectsClient(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	if _, err := st.mgmt.DeleteConnection(context.Background(), &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: &connID}); err != nil {
		t.Fatal(err)
	}
	if code, _ := closeStatus(t, c); code != websocket.StatusNormalClosure {
		t.Fatalf("client saw close %d", code)
	}
	ev := st.waitEvent(t, "DisconnectFunction", connID)
	rc := ev["requestContext"].(map[string]any)
	if rc["disconnectStatusCode"] != float64(1000) || rc["disconnectReason"] != "Connection Closed Normally" {
		t.Fatalf("disconnect = %v / %v", rc["disconnectStatusCode"], rc["disconnectReason"])
	}
	_, err := st.mgmt.PostToConnection(context.Background(), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("late")})
	var gone *types.GoneException
	if !errors.As(err, &gone) {
		t.Fatalf("post after delete: %v, want GoneException", err)
	}
	if _, err := st.mgmt.DeleteConnection(context.Background(), &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: &connID}); !errors.As(err, &gone) {
		t.Fatalf("second delete: %v, want GoneException", err)
	}
}

func TestServer_PostToConnection_Management(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	ctx := context.Background()
	read := func() string {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, b, err := c.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Both the stage-prefixed endpoint and the bare one work.
	for _, endpoint := range []string{st.srv.ManagementEndpoint(), st.srv.BaseURL()} {
		cl := st.client(t, endpoint, st.creds)
		if _, err := cl.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("hi " + endpoint)}); err != nil {
			t.Fatalf("post via %s: %v", endpoint, err)
		}
		if got := read(); got != "hi "+endpoint {
			t.Fatalf("client got %q", got)
		}
	}
	max := strings.Repeat("x", apigw.DefaultMaxMessageBytes)
	if _, err := st.mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte(max)}); err != nil {
		t.Fatalf("128 KB post: %v", err)
	}
	if got := read(); len(got) != apigw.DefaultMaxMessageBytes {
		t.Fatalf("client got %d bytes", len(got))
	}
	_, err := st.mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte(max + "x")})
	var tooLarge *types.PayloadTooLargeException
	if !errors.As(err, &tooLarge) {
		t.Fatalf("128 KB + 1 post: %v, want PayloadTooLargeException", err)
	}
	got, err := st.mgmt.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &connID})
	if err != nil {
		t.Fatal(err)
	}
	if got.Identity == nil || aws.ToString(got.Identity.SourceIp) != "127.0.0.1" || got.ConnectedAt == nil ||
		time.Since(*got.ConnectedAt) > time.Minute || got.LastActiveAt == nil || got.LastActiveAt.Before(*got.ConnectedAt) {
		t.Fatalf("GetConnection = %+v", got)
	}
	var gone *types.GoneException
	unknown := "AAAAAAAAAAAAAAA="
	if _, err := st.mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &unknown, Data: []byte("x")}); !errors.As(err, &gone) {
		t.Fatalf("post to unknown id: %v, want GoneException", err)
	}
	// A wrong secret and an unsigned request are refused with 403.
	wrong := st.creds
	wrong.SecretAccessKey = strings.Repeat("x", 40)
	bad := st.client(t, st.srv.ManagementEndpoint(), wrong)
	_, err = bad.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("x")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidSignatureException" {
		t.Fatalf("wrong secret: %v", err)
	}
	resp, err := http.Post(st.srv.ManagementEndpoint()+"/@connections/"+connID, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-Errortype") != "ForbiddenException" || !strings.Contains(string(body), "Missing Authentication Token") {
		t.Fatalf("unsigned post: %d %s", resp.StatusCode, body)
	}
}

// Real API Gateway answers 410 to a post during the connection's own $connect: the
// connection exists only once $connect returned success.
func TestServer_PostDuringConnect_Gone(t *testing.T) {
	st := newStack(t)
	c, err := st.dial(t, "user=alice&connect=post")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(st.events, "connect-post-result"))
	if err != nil || string(b) != "GoneException" {
		t.Fatalf("post during $connect: %q %v, want GoneException", b, err)
	}
	sendAndRead(t, c, "still connected")
}

func TestServer_Connect_SubprotocolAndNullResponse(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, st.srv.WebSocketURL()+"?user=a&connect=proto", &websocket.DialOptions{Subprotocols: []string{"chat.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "chat.v1" {
		t.Fatalf("subprotocol = %q", c.Subprotocol())
	}
	c2, err := st.dial(t, "user=b&connect=nothing")
	if err != nil {
		t.Fatalf("$connect returning null: %v", err)
	}
	sendAndRead(t, c2, "hello")
}

func TestServer_Limits(t *testing.T) {
	st := newStack(t)
	write := func(c *websocket.Conn, typ websocket.MessageType, frames ...int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w, err := c.Writer(ctx, typ)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range frames {
			// Each Write is one frame: coder/websocket does not coalesce them.
			if _, err := w.Write([]byte(strings.Repeat("a", n))); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const kb = 1024
	// At the limits: four 32 KB frames make one 128 KB message; it is delivered.
	c, connID := st.connect(t, "user=alice")
	write(c, websocket.MessageText, 32*kb, 32*kb, 32*kb, 32*kb)
	// The fixture's echo of a 128 KB event is itself over the post limit, so the
	// client gets the gateway's error frame; the integration got the message whole.
	if ev := readJSON(t, c); ev["message"] != "Internal server error" {
		t.Fatalf("reply = %v", ev)
	}
	delivered := false
	for _, ev := range st.eventsOf("MessageFunction", connID) {
		delivered = delivered || len(ev["body"].(string)) == 128*kb
	}
	if !delivered {
		t.Fatal("128 KB message not delivered whole")
	}
	for name, tc := range map[string]struct {
		typ    websocket.MessageType
		frames []int
		code   websocket.StatusCode
	}{
		"frame over 32 KB":    {websocket.MessageText, []int{32*kb + 1}, websocket.StatusMessageTooBig},
		"message over 128 KB": {websocket.MessageText, []int{32 * kb, 32 * kb, 32 * kb, 32 * kb, 1}, websocket.StatusMessageTooBig},
		"binary frame":        {websocket.MessageBinary, []int{10}, websocket.StatusUnsupportedData},
	} {
		t.Run(name, func(t *testing.T) {
			c, connID := st.connect(t, "user=alice")
			write(c, tc.typ, tc.frames...)
			if code, _ := closeStatus(t, c); code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
			ev := st.waitEvent(t, "DisconnectFunction", connID)
			if got := ev["requestContext"].(map[string]any)["disconnectStatusCode"]; got != float64(tc.code) {
				t.Fatalf("$disconnect code %v, want %d", got, tc.code)
			}
			if n := len(st.eventsOf("MessageFunction", connID)); n != 1 {
				t.Fatalf("over-limit message reached the integration (%d $default events)", n)
			}
		})
	}
	_ = connID
}

func TestServer_Timeouts_IdleAndMaxDuration(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		st := newStack(t, func(s *apigw.Server, _ map[string]lambdart.Function) { s.IdleTimeout = 500 * time.Millisecond })
		c, connID := st.connect(t, "user=alice")
		code, reason := closeStatus(t, c)
		if code != websocket.StatusGoingAway || reason != "Going away" {
			t.Fatalf("close %d %q", code, reason)
		}
		if ev := st.waitEvent(t, "DisconnectFunction", connID); ev["requestContext"].(map[string]any)["disconnectStatusCode"] != float64(1001) {
			t.Fatalf("disconnect = %v", ev["requestContext"])
		}
	})
	t.Run("max duration", func(t *testing.T) {
		st := newStack(t, func(s *apigw.Server, _ map[string]lambdart.Function) { s.MaxConnectionDuration = 2 * time.Second })
		c, _ := st.connect(t, "user=alice")
		// Activity does not extend the maximum duration.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 100 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"none"}`))
				cancel()
				if err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		code, _ := closeStatus(t, c)
		<-done
		if code != websocket.StatusGoingAway {
			t.Fatalf("close %d", code)
		}
	})
}

// API Gateway invokes each frame's integration independently: a slow frame does not
// hold back the next one.
func TestServer_Dispatch_Concurrent(t *testing.T) {
	st := newStack(t)
	c, _ := st.connect(t, "user=alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []string{"slow", "quick"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if first := readJSON(t, c); first["body"] != "quick" {
		t.Fatalf("first reply is %v: frames were dispatched one after another", first["body"])
	}
	if second := readJSON(t, c); second["body"] != "slow" {
		t.Fatalf("second reply is %v", second["body"])
	}
}

// The project's own authorizer, built from functions/authorize, behind the gateway.
func TestServer_RealAuthorizer_SignedURL(t *testing.T) {
	// It reads the signing secret from Secrets Manager at start-up.
	sm, err := secretslocal.StartDev(map[string]string{"sandgate/signing-secrets": local.DevSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	// And each verified user's revocation from the table.
	ddb := dynamodblocal.StartForTest(t)
	table := dynamodblocal.TableName(t)
	ddbClient, err := ddb.Client(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := state.CreateTable(context.Background(), ddbClient, table); err != nil {
		t.Fatal(err)
	}
	st := newStack(t, func(_ *apigw.Server, fns map[string]lambdart.Function) {
		fn := fns["AuthFunction"]
		fn.Path = authorizeBin
		fn.Env = map[string]string{"SIGNING_SECRET_ID": "sandgate/signing-secrets", "TABLE_NAME": table,
			"AWS_ENDPOINT_URL_DYNAMODB": ddb.Endpoint()}
		for k, v := range sm.Env {
			fn.Env[k] = v
		}
		fns["AuthFunction"] = fn
	})
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture template's identity source is "user"; the real URL carries userId.
	signed, err := signer.SignURL(st.srv.WebSocketURL(), "user_alice")
	if err != nil {
		t.Fatal(err)
	}
	query := signed[strings.Index(signed, "?")+1:] + "&user=x"
	c, connID := st.connect(t, query)
	ev := st.waitEvent(t, "ConnectFunction", connID)
	if a := ev["requestContext"].(map[string]any)["authorizer"].(map[string]any); a["userId"] != "user_alice" || a["principalId"] != "user_alice" {
		t.Fatalf("authorizer context = %v", a)
	}
	_ = c
	forged := auth.Signed{UserID: "user_alice", Exp: time.Now().Add(5 * time.Minute).Unix(), Sig: auth.Signature([]byte("another-secret-that-is-long-enough-32"), "user_alice", time.Now().Add(5*time.Minute).Unix())}
	_, err = st.dial(t, forged.Query()+"&user=x")
	var de *dialError
	if !errors.As(err, &de) || de.status != http.StatusForbidden {
		t.Fatalf("forged URL: %v, want 403", err)
	}
	if strings.Contains(st.out.String(), forged.Sig) || strings.Contains(st.logs.String(), forged.Sig) {
		t.Fatal("a signature reached the logs")
	}
	// Revoked: the same URL, signed before the revocation, is refused.
	if _, err := state.New(ddbClient, table).Revoke(context.Background(), "user_alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err = st.dial(t, query)
	if !errors.As(err, &de) || de.status != http.StatusForbidden {
		t.Fatalf("a revoked user's URL: %v, want 403", err)
	}
}

func TestServer_HTTPAPI(t *testing.T) {
	st := newStack(t)
	get := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, st.srv.HTTPURL()+path, strings.NewReader("payload"))
		req.Header.Add("X-Multi", "a")
		req.Header.Add("X-Multi", "b")
		req.Header.Set("Cookie", "c1=v1; c2=v2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("GET", "/status?userId=u&userId=v&sig=a%2Bb")
	if resp.StatusCode != 201 || len(resp.Header.Values("Set-Cookie")) != 2 || resp.Header.Get("X-Pid") == "" {
		t.Fatalf("GET /status: %d %v", resp.StatusCode, resp.Header)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Version != "2.0" || ev.RouteKey != "GET /status" || ev.RequestContext.RouteKey != "GET /status" ||
		ev.RawPath != "/test/status" || ev.RawQueryString != "userId=u&userId=v&sig=a%2Bb" ||
		ev.QueryStringParameters["userId"] != "u,v" || ev.QueryStringParameters["sig"] != "a+b" ||
		ev.Headers["x-multi"] != "a,b" || ev.RequestContext.Stage != "test" || ev.RequestContext.HTTP.Method != "GET" ||
		ev.RequestContext.HTTP.SourceIP != "127.0.0.1" || len(ev.Cookies) != 2 || ev.Body != "payload" {
		t.Fatalf("event = %s", body)
	}
	resp, body = get("DELETE", "/items/42")
	if resp.StatusCode != 201 {
		t.Fatalf("ANY /items/{id}: %d", resp.StatusCode)
	}
	_ = json.Unmarshal(body, &ev)
	if ev.RouteKey != "ANY /items/{id}" || ev.PathParameters["id"] != "42" {
		t.Fatalf("event = %s", body)
	}
	resp, body = get("GET", "/status?infer=1")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || string(body) != `{"inferred":"yes"}` {
		t.Fatalf("inferred response: %d %s", resp.StatusCode, body)
	}
	resp, body = get("GET", "/status?fail=1")
	if resp.StatusCode != 500 || string(body) != `{"message":"Internal Server Error"}` {
		t.Fatalf("function error: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/nope", "/items", "/items/1/2"} {
		if resp, body = get("GET", p); resp.StatusCode != 404 || string(body) != `{"message":"Not Found"}` {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := http.Get(strings.TrimSuffix(st.srv.HTTPURL(), "/test") + "/other/status"); resp.StatusCode != 404 {
		t.Fatalf("wrong stage: %d", resp.StatusCode)
	}
}

func TestServer_Start_LoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:0"} {
		s := apigw.New(apigw.Config{WebSocket: &apigw.WebSocketAPI{Stage: "s"}}, nil, nil)
		s.Addr = addr
		if err := s.Start(); !errors.Is(err, apigw.ErrNotLoopback) {
			t.Errorf("Start on %s: %v", addr, err)
		}
	}
}

func TestServer_NotAnUpgrade(t *testing.T) {
	st := newStack(t)
	resp, err := http.Get(strings.Replace(st.srv.WebSocketURL(), "ws://", "http://", 1) + "?user=a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
	if len(st.eventsOf("AuthFunction", "")) != 0 {
		t.Fatal("authorizer ran for a non-WebSocket request")
	}
}

func sortedKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// A connection that ends while $disconnects are dropped leaves no $disconnect event,
// though the gateway has forgotten it (410); the next one is reported again.
func TestServer_DropDisconnects_NoInvocation(t *testing.T) {
	st := newStack(t)
	st.srv.DropDisconnects(1)
	a, aID := st.connect(t, "user=alice")
	b, bID := st.connect(t, "user=bob")
	a.CloseNow() // the TCP connection dies, no close handshake
	var gone *types.GoneException
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := st.mgmt.GetConnection(context.Background(), &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &aID})
		if errors.As(err, &gone) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetConnection of a dead connection: %v, want GoneException", err)
		}
	}
	if err := b.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	st.waitEvent(t, "DisconnectFunction", bID)
	st.srv.Close() // waits for every invocation in flight
	if evs := st.eventsOf("DisconnectFunction", aID); len(evs) != 0 {
		t.Fatalf("dropped connection got %d $disconnect events", len(evs))
	}
	dropped := false
	for _, l := range st.logs.With(t, "connectionId", aID) {
		dropped = dropped || l["route"] == apigw.RouteDisconnect && l["reason"] == "DropDisconnects"
	}
	if !dropped {
		t.Fatalf("the drop is not logged:\n%s", st.logs)
	}
}

// The HTTP API's CorsConfiguration: API Gateway answers an allowed origin's preflight
// itself, whatever the routes, and adds the CORS headers to the integration's answer;
// another origin gets none.
func TestServer_HTTPAPI_CORS(t *testing.T) {
	st := newStack(t)
	do := func(method, path string, h map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, st.srv.HTTPURL()+path, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	pre := do("OPTIONS", "/status", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"})
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		pre.Header.Get("Access-Control-Allow-Methods") != "GET,POST" || pre.Header.Get("Access-Control-Allow-Headers") != "x-trace" ||
		pre.Header.Get("Access-Control-Max-Age") != "600" {
		t.Fatalf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	// A preflight of a path without a route is answered too, as API Gateway does.
	if r := do("OPTIONS", "/nope", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}); r.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight without a route: %d", r.StatusCode)
	}
	if r := do("OPTIONS", "/status", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight of another origin allowed: %v", r.Header)
	}
	get := do("GET", "/status?infer=1", map[string]string{"Origin": "https://app.example.com"})
	if get.StatusCode != 200 || get.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || get.Header.Get("Access-Control-Expose-Headers") != "x-pid" || get.Header.Get("Vary") != "Origin" {
		t.Fatalf("GET from the allowed origin: %d %v", get.StatusCode, get.Header)
	}
	if r := do("GET", "/status?infer=1", map[string]string{"Origin": "https://evil.example"}); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("GET from another origin: %d %v", r.StatusCode, r.Header)
	}
	if r := do("GET", "/status?infer=1", nil); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("same-origin GET got CORS headers: %v", r.Header)
	}
}
