package modelstub_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/modelstub"
)

func post(t *testing.T, s *modelstub.Server, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL()+modelstub.PathMessages, strings.NewReader(body))
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// A streamed reply comes as Anthropic streams it, in several deltas that join to the
// whole reply, with the usage in message_start and message_delta; a call without the
// key is refused.
func TestServer_StreamsAndWantsTheKey(t *testing.T) {
	s := &modelstub.Server{Key: "k-123"}
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if resp := post(t, s, "wrong", `{"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 401 {
		t.Fatalf("a wrong key: %d", resp.StatusCode)
	}
	body := `{"stream":true,"messages":[{"role":"user","content":"one"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"two words"}]}]}`
	resp := post(t, s, "k-123", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	var text strings.Builder
	deltas, outTokens := 0, 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type  string
			Delta struct{ Text string }
			Usage struct {
				OutputTokens int `json:"output_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev.Type)
		if ev.Type == "content_block_delta" {
			deltas++
			text.WriteString(ev.Delta.Text)
		}
		if ev.Type == "message_delta" {
			outTokens = ev.Usage.OutputTokens
		}
	}
	if want := `Turn 2. You said: "two words".`; text.String() != want || deltas < modelstub.DefaultDeltas {
		t.Fatalf("%d deltas %q, want %q", deltas, text.String(), want)
	}
	if outTokens != 6 || events[0] != "message_start" || events[len(events)-1] != "message_stop" {
		t.Fatalf("events %v, output tokens %d", events, outTokens)
	}
	if answered, refused := s.Calls(); answered != 1 || refused != 1 {
		t.Fatalf("calls %d %d", answered, refused)
	}
}
