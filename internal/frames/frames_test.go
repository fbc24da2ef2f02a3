package frames_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/frames"
)

func TestFrame_Bytes(t *testing.T) {
	got := string(frames.Error(frames.ReasonCapacity, "all sandboxes are busy").Bytes())
	want := `{"type":"sandgate.error","reason":"capacity","message":"all sandboxes are busy"}`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	f := frames.Status(frames.Restoring)
	f.Progress = &frames.Progress{Files: 3, Bytes: 10, TotalFiles: 5}
	var back frames.Frame
	if err := json.Unmarshal(f.Bytes(), &back); err != nil || back.State != "restoring" || back.Progress.TotalFiles != 5 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestIsPlatform(t *testing.T) {
	for in, want := range map[string]bool{
		`{"type":"sandgate.status","state":"ready"}`: true,
		` {"type":"sandgate.error"}`:                 true,
		`{"type":"sandgate."}`:                       false,
		`{"type":"chat","text":"sandgate.status"}`:   false,
		`{"type":1}`:                   false,
		`sandgate.status`:              false,
		``:                             false,
		`[{"type":"sandgate.status"}]`: false,
	} {
		if got := frames.IsPlatform([]byte(in)); got != want {
			t.Errorf("IsPlatform(%s) = %v, want %v", in, got, want)
		}
	}
}

// The receipt's wire form is what the SDKs and docs describe.
func TestSavedFrame_Wire(t *testing.T) {
	f := frames.SavedFrame(frames.Receipt{
		Time: time.Date(2026, 12, 6, 9, 0, 1, 250e6, time.UTC), Generation: 7, Files: 2, Bytes: 300, Digest: "ab12",
	})
	want := `{"type":"sandgate.status","state":"saved","receipt":{"time":"2026-12-06T09:00:01.25Z","generation":7,"files":2,"bytes":300,"digest":"ab12"}}`
	if got := string(f.Bytes()); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
