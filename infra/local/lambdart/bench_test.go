package lambdart_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/internal/logging"
)

// BenchmarkRuntime_Invoke_Warm measures one warm invocation: Runtime API hand-over
// to a waiting process and its response. Compare with BenchmarkBaseline_LoopbackHTTP,
// one plain loopback HTTP round trip, run alongside.
func BenchmarkRuntime_Invoke_Warm(b *testing.B) {
	rt := lambdart.New(logging.New(io.Discard, slog.LevelError), io.Discard)
	defer rt.Close()
	if err := rt.Add(lambdart.Function{Name: "Echo", Path: fixture, MaxConcurrency: 1}); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"op":"echo","value":"x"}`)
	if _, err := rt.Invoke(context.Background(), "Echo", payload); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := rt.Invoke(context.Background(), "Echo", payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBaseline_LoopbackHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	}))
	defer srv.Close()
	for b.Loop() {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"op":"echo","value":"x"}`))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
