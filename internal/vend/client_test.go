package vend_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/sandgate/sandgate/internal/vend"
)

// The client signs for Lambda with the credentials it is given, and reads each answer
// as the agent must act on it: credentials, refused for good, not yet, or try again.
func TestClient_Credentials_Answers(t *testing.T) {
	var status int
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if !strings.Contains(auth, "Credential=ASIATASK/") || !strings.Contains(auth, "/eu-west-1/lambda/aws4_request") ||
			r.Header.Get("X-Amz-Security-Token") != "task-token" || r.URL.Path != vend.PathCredentials || r.Method != http.MethodPost {
			t.Errorf("request %s %s, Authorization %q", r.Method, r.URL.Path, auth)
		}
		b, _ := io.ReadAll(r.Body)
		var req vend.Request
		if err := json.Unmarshal(b, &req); err != nil || req.UserID != "user_alice" || req.Generation != 3 || req.LeaseToken != "tok" {
			t.Errorf("body %s", b)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	c, err := vend.NewClient(srv.URL+"/", credentials.NewStaticCredentialsProvider("ASIATASK", "secret", "task-token"), "eu-west-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ask := func() (vend.Credentials, error) {
		return c.Credentials(context.Background(), vend.Request{UserID: "user_alice", Generation: 3, LeaseToken: "tok"})
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	b, _ := json.Marshal(vend.Credentials{AccessKeyID: "ASIAV", SecretAccessKey: "s", SessionToken: "t", Expiration: exp})
	status, body = 200, string(b)
	if got, err := ask(); err != nil || got.AccessKeyID != "ASIAV" || !got.Expiration.Equal(exp) {
		t.Errorf("200: %+v, %v", got, err)
	}
	for _, c := range []struct {
		status int
		body   string
		want   error
	}{
		{403, `{"error":"refused","retryable":false}`, vend.ErrRefused},
		{409, `{"error":"not_recorded","retryable":true}`, vend.ErrNotRecorded},
		{503, `{"error":"unavailable","retryable":true}`, nil},
		{403, `{"Message":"Forbidden"}`, nil}, // Lambda's own: not the vendor's decision
		{429, `{"Message":"Too Many Requests"}`, nil},
		{200, `{"AccessKeyId":""}`, nil},
	} {
		status, body = c.status, c.body
		_, err := ask()
		switch {
		case err == nil:
			t.Errorf("%d %s: no error", c.status, c.body)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%d %s: %v, want %v", c.status, c.body, err, c.want)
		case c.want == nil && (errors.Is(err, vend.ErrRefused) || errors.Is(err, vend.ErrNotRecorded)):
			t.Errorf("%d %s: %v, want a transient error", c.status, c.body, err)
		}
	}
}
