package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// holdProxy stands between one sandbox and the bucket. Reads always pass; while it
// holds, every write (any method but GET and HEAD) waits until Release, so a test can
// let a sandbox pass its checks and choose when its writes reach the store.
type holdProxy struct {
	URL string
	rp  *httputil.ReverseProxy

	mu      sync.Mutex
	holding bool
	gate    chan struct{} // closed by Release
	held    []*heldWrite
	changed chan struct{} // closed and replaced on every change
}

// heldWrite is one write the proxy held; status is the store's answer once released.
type heldWrite struct {
	at     time.Time
	method string
	path   string
	ctx    context.Context
	status int
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{changed: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host // SigV4 signed the host the client used
	}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	t.Cleanup(p.Release) // nothing stays blocked past the test
	p.URL = srv.URL
	return p
}

func (p *holdProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if r.Method == http.MethodGet || r.Method == http.MethodHead || !p.holding {
		p.mu.Unlock()
		p.rp.ServeHTTP(w, r)
		return
	}
	h := &heldWrite{at: time.Now(), method: r.Method, path: r.URL.Path, ctx: r.Context()}
	p.held = append(p.held, h)
	gate := p.gate
	p.notifyLocked()
	p.mu.Unlock()
	select {
	case <-gate:
	case <-r.Context().Done():
		return // the writer gave up: the store never sees it
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	p.rp.ServeHTTP(sw, r)
	p.mu.Lock()
	h.status = sw.status
	p.notifyLocked()
	p.mu.Unlock()
}

func (p *holdProxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Hold makes writes wait from now on.
func (p *holdProxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holding {
		p.holding, p.gate = true, make(chan struct{})
	}
}

// Release lets every held write go on, and later ones pass.
func (p *holdProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holding {
		p.holding = false
		close(p.gate)
	}
}

// waitHeld waits until a write the writer still waits for matches pred.
func (p *holdProxy) waitHeld(t *testing.T, within time.Duration, what string, pred func(*heldWrite) bool) {
	t.Helper()
	timeout := time.After(within)
	for {
		p.mu.Lock()
		for _, h := range p.held {
			if h.status == 0 && h.ctx.Err() == nil && pred(h) {
				p.mu.Unlock()
				return
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no held write: %s", what)
		}
	}
}

// answered returns the held writes the store answered, since since.
func (p *holdProxy) answered(since time.Time) []heldWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []heldWrite
	for _, h := range p.held {
		if h.status != 0 && !h.at.Before(since) {
			out = append(out, *h)
		}
	}
	return out
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// storedPrefix is every object under the user's prefix: bytes, ETag and the writer's
// generation, by key.
func storedPrefix(t *testing.T, s *testkit.Stack, user string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range s.Keys(t, taskenv.UserPrefix(user)) {
		info, body, err := s.Objects().Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = info.ETag + " gen=" + info.Meta["generation"] + " " + string(b)
	}
	return out
}

// A sandbox cut off from DynamoDB while S3 still answers keeps running (its lease's
// deadline, as it knows it, is far) while its successor takes the lease over — by a
// clock that says the lease ran out — restores, and writes. The stale sandbox's
// writes were let through its checks before the successor wrote: its periodic sync's
// uploads are held at the wire when the takeover stops its task (ECS StopTask), and
// its final sync passes its marker check before the successor's marker exists, then
// is held until the successor has synced. Released, every one of its writes is
// refused by the store (412: If-Match on a file both changed, If-None-Match on a file
// both created), it deletes nothing (a refused upload stops the sync before its
// deletes), writes no marker, reports being fenced and exits non-zero; the
// successor's objects and marker are byte for byte what it left. (The takeover here
// is the test's own, so that it can hold the stop until the successor is ready;
// TestTakeover_StopsTheReplacedTask has Connect and Prewarm stop the task.)
func TestChaos_StaleSandboxCutFromDynamoDB_CannotOverwriteSuccessor(t *testing.T) {
	t.Parallel()
	// A lease the stale sandbox never sees run out during the test, and a stop budget
	// under the task definition's 30 s StopTimeout.
	tm := timings{"LEASE_TTL": "300s", "STOP_TIMEOUT": "28s"}
	stale := newAgentEnv(t, tm)
	holdA := newHoldProxy(t, stale.s.Endpoints["AWS_ENDPOINT_URL_S3"])
	stale.s3.SetTarget(t, holdA.URL)
	user := stale.user("fenced")

	a, _ := stale.ready(user)
	a.write("shared.txt", []byte("shared, as generation 1 synced it"))
	a.write("gone.txt", []byte("deleted by the stale sandbox's user"))
	a.write("keep.txt", []byte("nobody touches this"))
	testkit.Eventually(t, reply, func() bool {
		m := stale.s.Marker(t, user)
		return m != nil && m.Files == 3 && stale.s.Object(t, user, "shared.txt") != nil
	}, func() string { return "the stale sandbox's first files never synced" })
	gen := a.lease.Generation

	// The partition: no DynamoDB; S3 answers, but the stale sandbox's writes wait.
	stale.ddb.Cut(true)
	holdA.Hold()
	a.write("shared.txt", []byte("shared, as the STALE sandbox changed it"))
	a.write("new.txt", []byte("new, as the STALE sandbox created it"))
	if err := os.Remove(filepath.Join(a.workspace(), "gone.txt")); err != nil {
		t.Fatal(err)
	}
	isFile := func(h *heldWrite) bool {
		return h.method == http.MethodPut && (strings.HasSuffix(h.path, "/files/shared.txt") || strings.HasSuffix(h.path, "/files/new.txt"))
	}
	holdA.waitHeld(t, reply, "the stale sandbox's periodic sync uploading", isFile)

	// The takeover, by a caller whose clock is past the stale lease's deadline. The
	// successor's writes wait too, until the stale sandbox's final sync is past its
	// checks.
	succ := newAgentEnv(t, tm) // the next revision of the test's task definition
	holdB := newHoldProxy(t, succ.s.Endpoints["AWS_ENDPOINT_URL_S3"])
	succ.s3.SetTarget(t, holdB.URL)
	holdB.Hold()
	skewed := *succ.s.Store
	skewed.Now = func() time.Time { return time.Now().Add(time.Hour) }
	lease, err := skewed.Acquire(context.Background(), user)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if lease.Generation != gen+1 {
		t.Fatalf("takeover generation %d, want %d", lease.Generation, gen+1)
	}
	cb := succ.connect(user)
	b := succ.launch(user, lease)
	cb.Status(frames.Ready, coldStart)
	stopped := time.Now()
	a.stop() // what ensure does after a takeover: ECS StopTask, SIGTERM to the agent
	holdA.waitHeld(t, coldStart, "the stale sandbox's final sync uploading", func(h *heldWrite) bool {
		return isFile(h) && h.at.After(stopped)
	})

	// The successor writes the same paths and syncs; then its state is the reference.
	holdB.Release()
	written := map[string]string{
		"shared.txt": "shared, as the SUCCESSOR changed it",
		"new.txt":    "new, as the SUCCESSOR created it",
		"gone.txt":   "gone.txt, written again by the SUCCESSOR",
	}
	for rel, data := range written {
		b.write(rel, []byte(data))
	}
	var want map[string]string
	testkit.Eventually(t, coldStart, func() bool {
		m := succ.s.Marker(t, user)
		if m == nil || m.Generation != lease.Generation || m.Files != 4 {
			return false
		}
		want = storedPrefix(t, succ.s, user)
		for rel, data := range written {
			if !strings.HasSuffix(want[taskenv.UserPrefix(user)+objsync.FilesDir+rel], " "+data) {
				return false
			}
		}
		return true
	}, func() string { return "the successor's files and marker never synced" })

	// Now the stale sandbox's final sync reaches the store.
	released := time.Now()
	holdA.Release()
	if code := a.exitCode(); code == 0 {
		t.Fatal("the stale sandbox exited 0 after being fenced")
	}
	writes := holdA.answered(stopped)
	if len(writes) == 0 {
		t.Fatal("none of the stale sandbox's final writes reached the store")
	}
	for _, w := range writes {
		if w.status != http.StatusPreconditionFailed {
			t.Errorf("stale %s %s after the successor wrote: %d, want 412", w.method, w.path, w.status)
		}
	}
	if got := storedPrefix(t, succ.s, user); len(got) != len(want) {
		t.Errorf("%d objects after the stale sync, %d before", len(got), len(want))
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s changed:\n got %q\nwant %q", k, got[k], v)
			}
		}
	}
	lost, ok := a.leaseLost()
	if !ok || lost.Before(released) {
		t.Fatalf("the stale sandbox did not report losing its lease after its final writes (ok=%v at %s)", ok, lost)
	}
	fenced := succ.s.Output.Lines(func(l testkit.Line) bool {
		return l.Task(a.arn) && isLeaseLost(l) && strings.Contains(l.Str(testkit.KeyError), objsync.ErrFenced.Error())
	})
	if len(fenced) == 0 {
		t.Fatal("the stale sandbox's report does not say it was fenced")
	}
	// The successor still serves, and its record is its own.
	if rec := succ.s.Running(t, user, reply); rec.TaskARN != b.arn || rec.Generation != lease.Generation {
		t.Fatalf("record %s generation %d, want the successor's", rec.TaskARN, rec.Generation)
	}
}

// A takeover stops the old task: a sandbox whose agent is paused (SIGSTOP) past its
// lease is replaced through Connect (a new connection) and through Prewarm, each
// function asking ECS, as its own role, to stop the task the replaced record named,
// with the reason; resumed, the old agent exits.
func TestTakeover_StopsTheReplacedTask(t *testing.T) {
	t.Parallel()
	s := apps.Get(t)
	for _, via := range []string{"connect", "prewarm"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			user := "user_stop" + via + randomHex(4)
			s.DialReady(t, user, coldStart)
			old := s.Running(t, user, reply)
			pid := s.TaskPid(t, old.TaskARN)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // a stopped process would outlive the stack
			s.WaitState(t, user, coldStart, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) })

			switch via {
			case "connect":
				s.Dial(t, user)
			case "prewarm":
				if code, body := s.HTTP(t, http.MethodPost, "/prewarm", s.SignedQuery(t, user)); code != http.StatusAccepted {
					t.Fatalf("prewarm: %d %v", code, body)
				}
			}
			repl := replaced(t, s, user, old)
			want := fmt.Sprintf("sandgate: lease taken over by generation %d", repl.Generation)
			var last string
			testkit.Eventually(t, reply, func() bool {
				out, err := s.ECSClient().DescribeTasks(context.Background(), &ecs.DescribeTasksInput{
					Cluster: aws.String(s.Cluster), Tasks: []string{old.TaskARN}})
				if err != nil || len(out.Tasks) != 1 {
					last = fmt.Sprint(out, err)
					return false
				}
				task := out.Tasks[0]
				last = aws.ToString(task.DesiredStatus) + " " + aws.ToString(task.StoppedReason)
				return aws.ToString(task.DesiredStatus) == "STOPPED" && aws.ToString(task.StoppedReason) == want
			}, func() string { return "the replaced task was not asked to stop: " + last })

			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			s.WaitTaskGone(t, old.TaskARN, reply)
			if rec := s.Running(t, user, reply); rec.TaskARN != repl.TaskARN {
				t.Fatalf("record names %s after the old task stopped, want %s", rec.TaskARN, repl.TaskARN)
			}
		})
	}
}
