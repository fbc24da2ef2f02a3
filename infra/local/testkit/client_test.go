package testkit_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

// server sends each frame in script, then echoes until the client leaves (or closes
// after the script when closeAfter is set).
func server(t *testing.T, script []string, closeAfter bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for _, f := range script {
			if c.Write(r.Context(), websocket.MessageText, []byte(f)) != nil {
				return
			}
		}
		if closeAfter {
			c.Close(websocket.StatusNormalClosure, "done")
			return
		}
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if c.Write(r.Context(), typ, b) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// Frames that a wait does not match are kept, in order, for the next waits.
func TestClient_Await_KeepsUnmatchedFrames(t *testing.T) {
	url := server(t, []string{`{"type":"hello"}`, `{"type":"sandgate.status","state":"starting"}`, "reply", `{"type":"sandgate.status","state":"ready"}`}, false)
	c, err := testkit.DialURL(t, url)
	if err != nil {
		t.Fatal(err)
	}
	c.Status("ready", testkit.Wait)
	if f := c.Next(testkit.Wait, "reply", func(f string) bool { return f == "reply" }); f != "reply" {
		t.Fatalf("got %q", f)
	}
	c.Status("starting", testkit.Wait)
	c.Send("echo me")
	c.Next(testkit.Wait, "echo", func(f string) bool { return f == "echo me" })
	if p := c.Pending(); len(p) != 1 || p[0] != `{"type":"hello"}` {
		t.Fatalf("pending = %q", p)
	}
}

// NextFrame takes frames in the order they arrived, those a wait kept first.
func TestClient_NextFrame_ArrivalOrder(t *testing.T) {
	url := server(t, []string{`{"type":"sandgate.status","state":"starting"}`, "reply", `{"type":"sandgate.status","state":"ready"}`}, false)
	c, err := testkit.DialURL(t, url)
	if err != nil {
		t.Fatal(err)
	}
	c.Next(testkit.Wait, "reply", testkit.Is("reply"))
	for _, want := range []string{"starting", "ready"} {
		if f := c.NextFrame(); f.State != want {
			t.Fatalf("frame %+v, want state %s", f, want)
		}
	}
}

// A wait on a connection the server closed ends with ErrClosed, after the frames that
// arrived before the close.
func TestClient_Await_Closed(t *testing.T) {
	url := server(t, []string{`{"type":"sandgate.error","reason":"capacity"}`}, true)
	c, err := testkit.DialURL(t, url)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.ErrorFrame(testkit.Wait); r != "capacity" {
		t.Fatalf("reason = %q", r)
	}
	// Waiting out the timeout instead would end with another error.
	if _, err := c.Await(time.Minute, func(string) bool { return true }); !errors.Is(err, testkit.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// A refused handshake reports the status.
func TestDialURL_Refused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }))
	defer srv.Close()
	_, err := testkit.DialURL(t, "ws"+strings.TrimPrefix(srv.URL, "http"))
	var he *testkit.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusForbidden {
		t.Fatalf("err = %v, want a 403 HandshakeError", err)
	}
}
