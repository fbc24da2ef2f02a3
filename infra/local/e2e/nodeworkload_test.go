package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// nodeSpendLimit is each user's token budget a day in nodeStack: more than a user's
// first turn and less than the first two (the stub counts a word as a token: the first
// turn of TestNodeWorkload_StreamsKeepsAndSeparatesConversations costs 10, the second
// 18), so the third is refused only if the spend outlived the restore between them.
const nodeSpendLimit = 20

// nodeStack runs the Node example (container/node-gateway) as every sandbox's
// workload, with a model API on loopback whose key is in the stack's Secrets Manager:
// the template deployed with ModelApiUrl, ModelApiKeySecretArn and a spend limit, as a
// team deploys it.
func nodeStack(t *testing.T) (*testkit.Stack, *testkit.ModelStub) {
	t.Helper()
	model := testkit.StartModelStub(t)
	cmd := testkit.NodeGateway(t)
	s := testkit.Start(t, func(o *stack.Options) {
		model.Deploy(o)
		o.ModelAPI.Params = map[string]string{"ModelApiSpendLimit": fmt.Sprint(nodeSpendLimit)}
		o.Overrides["SANDBOX_COMMAND"] = cmd
		noIdleStop(o)
	})
	return s, model
}

// gatewayFrame is one of the Node gateway's frames.
type gatewayFrame struct {
	Type          string   `json:"type"`
	ID            string   `json:"id"`
	Seq           int      `json:"seq"`
	Text          string   `json:"text"`
	Deltas        int      `json:"deltas"`
	Status        int      `json:"status"`
	Limit         string   `json:"limit"`
	Message       string   `json:"message"`
	User          string   `json:"user"`
	Conversations []string `json:"conversations"`
	Messages      []struct {
		Role, Text string
	} `json:"messages"`
}

func gatewayType(typ string) func(string) bool {
	return func(f string) bool {
		var g gatewayFrame
		return json.Unmarshal([]byte(f), &g) == nil && g.Type == typ
	}
}

func parseGateway(t *testing.T, f string) gatewayFrame {
	t.Helper()
	var g gatewayFrame
	if err := json.Unmarshal([]byte(f), &g); err != nil {
		t.Fatalf("frame %q: %v", f, err)
	}
	return g
}

// chat takes one turn and returns the reply's deltas, in the order they arrived, and
// its chat.done.
func chat(t *testing.T, c *testkit.Client, id, text string) ([]gatewayFrame, gatewayFrame) {
	t.Helper()
	deltas, end := turn(t, c, id, text)
	if end.Type == "chat.error" {
		t.Fatalf("%s: %s: %d %s", c.User, id, end.Status, end.Message)
	}
	return deltas, end
}

// turn takes one turn and returns the reply's deltas and its chat.done or chat.error.
func turn(t *testing.T, c *testkit.Client, id, text string) ([]gatewayFrame, gatewayFrame) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "chat", "id": id, "text": text})
	c.Send(string(b))
	var deltas []gatewayFrame
	for {
		f := c.Next(reply, "the reply to "+id, func(f string) bool {
			g := gatewayFrame{}
			return json.Unmarshal([]byte(f), &g) == nil && g.ID == id &&
				(g.Type == "chat.delta" || g.Type == "chat.done" || g.Type == "chat.error")
		})
		g := parseGateway(t, f)
		switch g.Type {
		case "chat.delta":
			deltas = append(deltas, g)
		case "chat.error", "chat.done":
			return deltas, g
		}
	}
}

// history asks for the default conversation.
func history(t *testing.T, c *testkit.Client) []string {
	t.Helper()
	c.Send(`{"type":"history"}`)
	h := parseGateway(t, c.Next(reply, "history", gatewayType("history")))
	var out []string
	for _, m := range h.Messages {
		out = append(out, m.Role+": "+m.Text)
	}
	return out
}

// The Node example end to end on the local stack, each user's sandbox its own gateway
// process calling the model through its agent's proxy: a reply streams as several
// frames that arrive in order; two users never see each other's conversation; a
// conversation survives its sandbox's stop and a new sandbox's restore (the model is
// sent the whole history again); the user's spend limit holds across the restore;
// every call reached the model with the team's key, and the key and the conversation
// are in no log line.
func TestNodeWorkload_StreamsKeepsAndSeparatesConversations(t *testing.T) {
	t.Parallel()
	s, model := nodeStack(t)
	alice, bob := "user_nodealice"+randomHex(4), "user_nodebob"+randomHex(4)

	a := s.DialReady(t, alice, coldStart)
	if h := parseGateway(t, a.Next(reply, "hello", gatewayType("hello"))); h.User != alice || len(h.Conversations) != 0 {
		t.Fatalf("alice's hello: %+v", h)
	}
	deltas, done := chat(t, a, "a1", "hello from alice")
	want := `Turn 1. You said: "hello from alice".`
	if len(deltas) < 3 {
		t.Fatalf("the reply came as %d frames, want several", len(deltas))
	}
	var joined strings.Builder
	for i, d := range deltas {
		if d.Seq != i {
			t.Fatalf("delta %d has seq %d: out of order (%+v)", i, d.Seq, deltas)
		}
		joined.WriteString(d.Text)
	}
	if joined.String() != want || done.Text != want || done.Deltas != len(deltas) {
		t.Fatalf("streamed %q, done %q (%d deltas of %d), want %q", joined.String(), done.Text, done.Deltas, len(deltas), want)
	}

	b := s.DialReady(t, bob, coldStart)
	b.Next(reply, "hello", gatewayType("hello"))
	if _, done := chat(t, b, "b1", "hello from bob"); done.Text != `Turn 1. You said: "hello from bob".` {
		t.Fatalf("bob's first turn sees another conversation: %q", done.Text)
	}
	if got := history(t, b); len(got) != 2 || strings.Contains(strings.Join(got, "\n"), "alice") {
		t.Fatalf("bob's history: %q", got)
	}

	// Alice's sandbox stops (SIGTERM: the gateway saves, the final sync uploads).
	rec := s.Running(t, alice, reply)
	s.StopTask(t, rec.TaskARN)
	if code := s.ExitCode(t, rec.TaskARN, coldStart); code != 0 {
		t.Fatalf("alice's agent exited %d", code)
	}
	s.Stopped(t, alice, reply)
	var saved []struct{ Role, Text string }
	raw := s.Object(t, alice, "gateway/conversations/default.json")
	if err := json.Unmarshal(raw, &saved); err != nil || len(saved) != 2 || saved[1].Text != want {
		t.Fatalf("alice's conversation in the bucket: %s (%v)", raw, err)
	}
	a.Close()

	// A new sandbox restores it: the gateway lists it, and the model gets it whole.
	a = s.DialReady(t, alice, coldStart)
	if rec2 := s.Running(t, alice, reply); rec2.TaskARN == rec.TaskARN || rec2.Generation <= rec.Generation {
		t.Fatalf("alice's sandbox was not restarted: %s generation %d", rec2.TaskARN, rec2.Generation)
	}
	if h := parseGateway(t, a.Next(reply, "hello", gatewayType("hello"))); fmt.Sprint(h.Conversations) != "[default]" {
		t.Fatalf("after the restore alice's hello lists %q", h.Conversations)
	}
	if _, done := chat(t, a, "a2", "and again"); done.Text != `Turn 2. You said: "and again".` {
		t.Fatalf("after the restore the model saw %q: the history was lost", done.Text)
	}
	wantA := []string{"user: hello from alice", "assistant: " + want, "user: and again", `assistant: Turn 2. You said: "and again".`}
	if got := history(t, a); strings.Join(got, "\n") != strings.Join(wantA, "\n") {
		t.Fatalf("alice's history after the restore:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantA, "\n"))
	}
	if got := history(t, b); len(got) != 2 {
		t.Fatalf("bob's history changed: %q", got)
	}

	// The spend limit is the user's, not the sandbox's: alice's two turns, one each
	// side of the restore, spent her budget, and the third is refused before it
	// reaches the model; bob's is his own.
	var aliceTokens []int64
	for _, l := range s.Output.Lines(func(l testkit.Line) bool { return l.Msg == "upstream call" && l.Fields["userId"] == alice }) {
		n, _ := l.Int("tokens")
		aliceTokens = append(aliceTokens, n)
	}
	if len(aliceTokens) != 2 || aliceTokens[0] >= nodeSpendLimit || aliceTokens[1] >= nodeSpendLimit || aliceTokens[0]+aliceTokens[1] < nodeSpendLimit {
		t.Fatalf("alice's calls cost %v tokens: the limit %d no longer tells a kept spend from a reset one", aliceTokens, nodeSpendLimit)
	}
	if _, end := turn(t, a, "a3", "once more"); end.Type != "chat.error" || end.Status != 429 || end.Limit != "spend" {
		t.Fatalf("alice's third turn, over her budget: %+v", end)
	}
	if _, done := chat(t, b, "b2", "still me"); done.Text != `Turn 2. You said: "still me".` {
		t.Fatalf("bob's second turn: %q", done.Text)
	}

	// Every call carried the team's key (the gateway has none: the proxy added it).
	if answered, refused := model.Calls(); answered != 4 || refused != 0 {
		t.Fatalf("the model answered %d calls and refused %d, want 4 and 0", answered, refused)
	}
	if strings.Contains(s.Output.Tail(testkit.DefaultTailBytes), model.Key) {
		t.Fatal("the key is in the stack's output")
	}
	lines := s.Output.Lines(func(l testkit.Line) bool { return l.Msg == "upstream call" })
	calls := len(lines)
	for _, l := range lines {
		line := fmt.Sprint(l.Fields)
		for _, body := range []string{"hello from", "and again", "still me", "You said"} {
			if strings.Contains(line, body) {
				t.Errorf("a proxy log line holds the conversation: %s", line)
			}
		}
		if l.Fields["path"] != "/v1/messages" || l.Fields["status"] != 200.0 || l.Fields["upstream"] != "model" {
			t.Errorf("proxy log line %s", line)
		}
	}
	if calls != 4 {
		t.Errorf("%d proxy log lines, want one per call", calls)
	}
}
