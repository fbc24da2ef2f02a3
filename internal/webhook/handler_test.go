package webhook_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/webhook"
)

// newSecret is a whsec_ secret as Clerk shows one.
func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

type static struct{ wh *svix.Webhook }

func (s static) Get(context.Context) (*svix.Webhook, error) { return s.wh, nil }

// recorder is the erase function as the handler sees it: what it was asked.
type recorder struct {
	mu   sync.Mutex
	reqs []webhook.EraseRequest
	err  error
}

func (r *recorder) Erase(_ context.Context, req webhook.EraseRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.reqs = append(r.reqs, req)
	return nil
}

type env struct {
	h      *webhook.Handler
	erased *recorder
	secret string
	logs   *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	secret := newSecret(t)
	wh, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	db := testkit.NewDB(t)
	store := db.Store()
	store.Now = time.Now
	logs := &bytes.Buffer{}
	e := &env{erased: &recorder{}, secret: secret, logs: logs}
	e.h = &webhook.Handler{Secret: static{wh}, Messages: store, Eraser: e.erased, Log: logging.New(logs, slog.LevelDebug)}
	return e
}

// request is a delivery of body signed with secret at ts under message id, as Svix
// sends it to an HTTP API route (headers lower-cased).
func request(t *testing.T, secret, id string, ts time.Time, body string) events.APIGatewayV2HTTPRequest {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req := events.APIGatewayV2HTTPRequest{Body: body, Headers: map[string]string{
		"svix-id": id, "svix-timestamp": fmt.Sprint(ts.Unix()), "svix-signature": sig, "content-type": "application/json",
	}}
	req.RequestContext.HTTP.Method = http.MethodPost
	return req
}

func userDeleted(user string) string {
	return `{"data":{"deleted":true,"id":"` + user + `","object":"user"},"object":"event","type":"user.deleted"}`
}

func (e *env) handle(t *testing.T, req events.APIGatewayV2HTTPRequest) (int, string) {
	t.Helper()
	resp, err := e.h.Handle(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Body
}

// A user.deleted signed with the endpoint's secret starts the user's deletion once; the
// same message again (a retry, or a replay inside the timestamp's tolerance) does not.
func TestHandler_UserDeleted_ActsOnceOnARealSignature(t *testing.T) {
	e := newEnv(t)
	req := request(t, e.secret, "msg_2a1", time.Now(), userDeleted("user_29w83sxmDNGwOuEthce5gg56FcC"))
	if code, body := e.handle(t, req); code != http.StatusAccepted || !strings.Contains(body, `"accepted"`) {
		t.Fatalf("first delivery: %d %s", code, body)
	}
	if len(e.erased.reqs) != 1 || e.erased.reqs[0] != (webhook.EraseRequest{UserID: "user_29w83sxmDNGwOuEthce5gg56FcC", WebhookID: "msg_2a1"}) {
		t.Fatalf("erase requests %+v", e.erased.reqs)
	}
	// Delivered again, re-signed with a new timestamp as Svix's retries are.
	again := request(t, e.secret, "msg_2a1", time.Now().Add(time.Second), userDeleted("user_29w83sxmDNGwOuEthce5gg56FcC"))
	for _, r := range []events.APIGatewayV2HTTPRequest{req, again} {
		if code, body := e.handle(t, r); code != http.StatusOK || !strings.Contains(body, `"duplicate"`) {
			t.Fatalf("replay: %d %s", code, body)
		}
	}
	if len(e.erased.reqs) != 1 {
		t.Fatalf("a replay started another deletion: %+v", e.erased.reqs)
	}
	// Base64 bodies (API Gateway's choice for some content types) verify the same.
	b64 := request(t, e.secret, "msg_2a2", time.Now(), userDeleted("user_b"))
	b64.Body, b64.IsBase64Encoded = base64.StdEncoding.EncodeToString([]byte(b64.Body)), true
	if code, _ := e.handle(t, b64); code != http.StatusAccepted {
		t.Fatalf("base64 body: %d", code)
	}
}

// Forged, tampered, unsigned, stale and future messages are refused with 401 and act on
// nothing; the log says why, never the signature or the secret.
func TestHandler_Refusals(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	forged := request(t, newSecret(t), "msg_f", now, userDeleted("user_a"))
	tampered := request(t, e.secret, "msg_t", now, userDeleted("user_a"))
	tampered.Body = userDeleted("user_b")
	otherID := request(t, e.secret, "msg_o", now, userDeleted("user_a"))
	otherID.Headers["svix-id"] = "msg_other"
	unsigned := request(t, e.secret, "msg_u", now, userDeleted("user_a"))
	delete(unsigned.Headers, "svix-signature")
	for name, req := range map[string]events.APIGatewayV2HTTPRequest{
		"forged":        forged,
		"tampered body": tampered,
		"another id":    otherID,
		"unsigned":      unsigned,
		"stale":         request(t, e.secret, "msg_s", now.Add(-6*time.Minute), userDeleted("user_a")),
		"future":        request(t, e.secret, "msg_n", now.Add(6*time.Minute), userDeleted("user_a")),
	} {
		if code, body := e.handle(t, req); code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	if len(e.erased.reqs) != 0 {
		t.Fatalf("a refused message started a deletion: %+v", e.erased.reqs)
	}
	logs := e.logs.String()
	for _, reason := range []string{`"reason":"bad_signature"`, `"reason":"stale"`, `"reason":"malformed"`} {
		if !strings.Contains(logs, reason) {
			t.Errorf("no %s in the log", reason)
		}
	}
	if strings.Contains(logs, forged.Headers["svix-signature"][3:]) || strings.Contains(logs, strings.TrimPrefix(e.secret, "whsec_")) {
		t.Errorf("the log holds a signature or the secret:\n%s", logs)
	}
	get := request(t, e.secret, "msg_g", now, userDeleted("user_a"))
	get.RequestContext.HTTP.Method = http.MethodGet
	if code, _ := e.handle(t, get); code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", code)
	}
}

// Other event types, and a user.deleted whose id is no sandgate user id, are
// acknowledged and ignored; a body that is not an event is 400.
func TestHandler_UnknownTypesIgnored(t *testing.T) {
	e := newEnv(t)
	for i, body := range []string{
		`{"data":{"id":"user_a"},"object":"event","type":"user.created"}`,
		`{"data":{"id":"sess_1"},"object":"event","type":"session.ended"}`,
		userDeleted("org_123"),
		userDeleted(""),
	} {
		if code, resp := e.handle(t, request(t, e.secret, fmt.Sprintf("msg_%d", i), time.Now(), body)); code != http.StatusOK || !strings.Contains(resp, `"ignored"`) {
			t.Errorf("%s: %d %s", body, code, resp)
		}
	}
	if code, _ := e.handle(t, request(t, e.secret, "msg_bad", time.Now(), `not json`)); code != http.StatusBadRequest {
		t.Errorf("not JSON: %d", code)
	}
	if len(e.erased.reqs) != 0 {
		t.Fatalf("started deletions: %+v", e.erased.reqs)
	}
}

// A deletion that cannot be started is 503 and the message is forgotten, so Svix's
// next delivery starts it.
func TestHandler_EraseFailsThenRetried(t *testing.T) {
	e := newEnv(t)
	e.erased.err = errors.New("lambda unavailable")
	if code, _ := e.handle(t, request(t, e.secret, "msg_r", time.Now(), userDeleted("user_a"))); code != http.StatusServiceUnavailable {
		t.Fatalf("failed start: %d", code)
	}
	e.erased.err = nil
	if code, _ := e.handle(t, request(t, e.secret, "msg_r", time.Now(), userDeleted("user_a"))); code != http.StatusAccepted {
		t.Fatalf("Svix's retry: %d", code)
	}
	if len(e.erased.reqs) != 1 {
		t.Fatalf("erase requests %+v", e.erased.reqs)
	}
}

func TestParseSecret(t *testing.T) {
	for _, bad := range []string{"", "s3cr3t-value", "whsec_not*base64"} {
		if _, err := webhook.ParseSecret(bad); err == nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// SampleSecret signs events/webhook.json (make invoke FN=WebhookFunction): a documented
// test value, never a real endpoint's.
const sampleSecret = "whsec_c2FuZGdhdGUtc2FtcGxlLXdlYmhvb2stc2VjcmV0"

// The sample event is what API Gateway hands the function for a Clerk delivery: its
// signature verifies under the sample secret, and, recorded long ago, it is refused
// as stale, as a replay of it would be.
func TestSampleEvent(t *testing.T) {
	b, err := os.ReadFile("../../events/webhook.json")
	if err != nil {
		t.Fatal(err)
	}
	var req events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	wh, err := webhook.ParseSecret(sampleSecret)
	if err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{}
	for k, v := range req.Headers {
		hdr.Set(k, v)
	}
	if err := wh.VerifyIgnoringTimestamp([]byte(req.Body), hdr); err != nil {
		t.Fatalf("the sample's signature: %v", err)
	}
	e := newEnv(t)
	e.h.Secret = static{wh}
	if code, _ := e.handle(t, req); code != http.StatusUnauthorized || !strings.Contains(e.logs.String(), `"reason":"stale"`) {
		t.Fatalf("the recorded sample: %d (want 401, stale)", code)
	}
	var er webhook.EraseRequest
	if b, err := os.ReadFile("../../events/erase.json"); err != nil || json.Unmarshal(b, &er) != nil || er.UserID != "user_alice" {
		t.Fatalf("events/erase.json: %+v, %v", er, err)
	}
}
