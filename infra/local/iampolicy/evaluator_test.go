package iampolicy_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

func ownTable(t *testing.T) *identity.Principal {
	return session(t, stackAuthority(), "Tenant", nil, u1, nil, ownItems(nil))
}

func leading(p *identity.Principal, pk string) identity.Request {
	return identity.Request{Principal: p, Action: "dynamodb:GetItem", Resource: tableARN,
		Context: map[string][]string{"dynamodb:LeadingKeys": {pk}}}
}

// variant is leading's request made distinct by n, which does not change its answer.
func variant(p *identity.Principal, pk string, n int) identity.Request {
	r := leading(p, pk)
	r.Context["dynamodb:ReturnConsumedCapacity"] = []string{fmt.Sprint("TOTAL", n)}
	return r
}

func TestEvaluator_ConcurrentRequestsShareOneProcess(t *testing.T) {
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	p := ownTable(t)
	const distinct, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, distinct*each)
	for i := 0; i < distinct; i++ {
		own := i%2 == 0
		pk := "USER#u1"
		if !own {
			pk = "USER#u2"
		}
		for j := 0; j < each; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := e.Authorize(context.Background(), variant(p, pk, i))
				switch {
				case own && err != nil:
					errs <- fmt.Errorf("request %d for the own key: %v", i, err)
				case !own && !errors.Is(err, identity.ErrDenied):
					errs <- fmt.Errorf("request %d for another user's key: %v, want denied", i, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Identical requests in flight wait for one evaluation: exactly one per distinct
	// request reached the process, every other one was a cache hit.
	st := e.Stats()
	if st.Evaluations != distinct || st.CacheHits != distinct*(each-1) {
		t.Errorf("stats = %+v, want %d evaluations and %d hits", st, distinct, distinct*(each-1))
	}
}

func TestEvaluator_CacheKeyCoversWhatDecides(t *testing.T) {
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	a := stackAuthority()
	p1 := session(t, a, "Tenant", nil, u1, nil, ownItems(nil))
	p2 := session(t, a, "Tenant", nil, map[string]string{"userId": "u2"}, nil)
	ctx := context.Background()
	ask := func(r identity.Request) error { return e.Authorize(ctx, r) }

	if err := ask(leading(p1, "USER#u1")); err != nil {
		t.Fatal(err)
	}
	if err := ask(leading(p1, "USER#u1")); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Evaluations != 1 || st.CacheHits != 1 {
		t.Fatalf("repeat: %+v, want 1 evaluation, 1 hit", st)
	}
	// Another context, another principal (other session tags), another resource
	// policy: each is a new question with its own answer.
	if err := ask(leading(p1, "USER#u2")); !errors.Is(err, identity.ErrDenied) {
		t.Errorf("other key: %v, want denied", err)
	}
	if err := ask(leading(p2, "USER#u1")); !errors.Is(err, identity.ErrDenied) {
		t.Errorf("other principal: %v, want denied", err)
	}
	withPolicy := leading(p1, "USER#u1")
	withPolicy.ResourcePolicy = doc(map[string]any{"Effect": "Deny", "Principal": "*", "Action": "dynamodb:*", "Resource": "*"})
	if err := ask(withPolicy); !errors.Is(err, identity.ErrDenied) {
		t.Errorf("resource policy denying: %v, want denied", err)
	}
	if st := e.Stats(); st.Evaluations != 4 {
		t.Errorf("stats = %+v, want 4 evaluations", st)
	}
}

func TestEvaluator_DenialLogsOneLine(t *testing.T) {
	var logs testkit.Logs
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	p := ownTable(t)
	if err := e.Authorize(context.Background(), leading(p, "USER#u1")); err != nil {
		t.Fatal(err)
	}
	if n := len(logs.Lines(t)); n != 0 {
		t.Fatalf("an allowed request logged %d lines", n)
	}
	err := e.Authorize(context.Background(), leading(p, "USER#u2"))
	if !errors.Is(err, identity.ErrDenied) {
		t.Fatalf("%v, want denied", err)
	}
	lines := logs.Lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	for k, want := range map[string]any{
		iampolicy.LogPrincipal:  p.ARN,
		iampolicy.LogAction:     "dynamodb:GetItem",
		iampolicy.LogResource:   tableARN,
		iampolicy.LogExplicit:   false,
		iampolicy.LogWouldAllow: "Tenant/p1#OwnItems",
	} {
		if l[k] != want {
			t.Errorf("%s = %v, want %v", k, l[k], want)
		}
	}
	if m, _ := l[iampolicy.LogMismatch].(string); !strings.Contains(m, "condition") || !strings.Contains(m, "dynamodb:LeadingKeys") || strings.Contains(m, "resource") {
		t.Errorf("mismatch = %q, want the failed LeadingKeys condition only", m)
	}

	// The same denial from the cache logs its line too.
	_ = e.Authorize(context.Background(), leading(p, "USER#u2"))
	if n := len(logs.Lines(t)); n != 2 {
		t.Errorf("%d lines after a cached denial, want 2", n)
	}
	// A session policy that blocks what the role allows names the statements that allowed it.
	blocked := session(t, stackAuthority(), "Tenant", nil, u1, doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}), ownItems(nil))
	_ = e.Authorize(context.Background(), leading(blocked, "USER#u1"))
	lines = logs.Lines(t)
	if got, _ := lines[len(lines)-1][iampolicy.LogAllowedBy].(string); got != "identity Tenant/p1#OwnItems" {
		t.Errorf("allowedBy = %q", got)
	}
}

func TestEvaluator_RestartsOnceThenRefuses(t *testing.T) {
	var logs testkit.Logs
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	p := ownTable(t)
	ctx := context.Background()
	if err := e.Authorize(ctx, leading(p, "USER#u1")); err != nil {
		t.Fatal(err)
	}
	e.KillForTest()
	// A new question after the crash is answered by a restarted process.
	if err := e.Authorize(ctx, variant(p, "USER#u1", 1)); err != nil {
		t.Fatalf("after one crash: %v", err)
	}
	if st := e.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts = %d, want 1", st.Restarts)
	}
	e.KillForTest()
	err := e.Authorize(ctx, leading(p, "USER#u3"))
	var de *identity.DeniedError
	if err == nil || errors.As(err, &de) || errors.Is(err, identity.ErrUnsupported) {
		t.Fatalf("after a second crash: %v, want an evaluator failure", err)
	}
	// It stays refused, never allowed.
	if err := e.Authorize(ctx, leading(p, "USER#u4")); err == nil {
		t.Fatal("a later request was allowed")
	}
}

func TestEvaluator_Closed(t *testing.T) {
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Authorize(context.Background(), leading(ownTable(t), "USER#u1")); !errors.Is(err, iampolicy.ErrClosed) {
		t.Errorf("%v, want ErrClosed", err)
	}
}

func TestStart_CannotRun(t *testing.T) {
	root, err := iampolicy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, iampolicy.ScriptPath)
	ctx := context.Background()

	_, err = iampolicy.Start(ctx, script, t.TempDir(), iampolicy.Options{})
	if !errors.Is(err, iampolicy.ErrSimulatorMissing) || !strings.Contains(err.Error(), "npm ci") {
		t.Errorf("no node_modules: %v, want ErrSimulatorMissing naming npm ci", err)
	}
	_, err = iampolicy.Start(ctx, script, filepath.Join(root, iampolicy.NodeModulesPath), iampolicy.Options{Node: filepath.Join(t.TempDir(), "node")})
	if !errors.Is(err, iampolicy.ErrNodeMissing) {
		t.Errorf("no node: %v, want ErrNodeMissing", err)
	}
	// Another iam-simulate than the pinned one is refused by the script itself.
	fake := t.TempDir()
	dir := filepath.Join(fake, "@cloud-copilot", "iam-simulate")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"version":"0.0.1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = iampolicy.Start(ctx, script, fake, iampolicy.Options{})
	if err == nil || !strings.Contains(err.Error(), "npm ci") || !strings.Contains(err.Error(), iampolicy.SimulatorVersion) {
		t.Errorf("wrong version: %v, want a refusal naming %s and npm ci", err, iampolicy.SimulatorVersion)
	}
}
