package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Two users connecting at once get two sandboxes, each on its own prefix, and neither
// sees the other's files.
func TestStack_Connect_TwoUsersTwoSandboxes(t *testing.T) {
	defer dump(t)
	users := []string{"user_twoA", "user_twoB"}
	clients := make([]*testkit.Client, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tryDial(t, u)
			if err != nil {
				t.Error(err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, u := range users {
		c := clients[i]
		if f, ok := platform(c.Next()); !ok || f.State != frames.Starting {
			t.Fatalf("%s: first frame %+v", u, f)
		}
		until(t, c, "ready", isStatus(frames.Ready))
		runs := runTasks(u)
		if len(runs) != 1 || testkit.TaskEnv(runs[0])[taskenv.Prefix] != "users/"+u+"/" {
			t.Fatalf("%s: %d RunTask calls", u, len(runs))
		}
		c.Send("/note secret of " + u)
	}
	for i, u := range users {
		c := clients[i]
		until(t, c, "note.saved", func(b []byte) bool { return bytes.Contains(b, []byte(`"note.saved"`)) })
		c.Send("/notes")
		var notes struct{ Notes []string }
		until(t, c, "notes", func(b []byte) bool {
			return bytes.Contains(b, []byte(`"type":"notes"`)) && json.Unmarshal(b, &notes) == nil
		})
		if len(notes.Notes) != 1 || notes.Notes[0] != "secret of "+u {
			t.Fatalf("%s sees notes %q", u, notes.Notes)
		}
	}
	a, _ := shared.Store.Get(context.Background(), users[0])
	b, _ := shared.Store.Get(context.Background(), users[1])
	if a == nil || b == nil || a.TaskARN == b.TaskARN || a.Endpoint == b.Endpoint {
		t.Fatalf("records %+v %+v", a, b)
	}
}

// Connect answers and the client hears "starting" while its task is still being
// provisioned: nothing waits for the task.
func TestStack_Connect_ReturnsBeforeTheTask(t *testing.T) {
	defer dump(t)
	shared.ECS.SetLaunchDelay(time.Hour)
	defer shared.ECS.SetLaunchDelay(launchDelay)
	c := dial(t, "user_slowtask")
	if f, ok := platform(c.Next()); !ok || f.State != frames.Starting {
		t.Fatalf("first frame %+v", f)
	}
	ti, ok := taskOf(t, "user_slowtask")
	if !ok || ti.LastStatus != "PROVISIONING" || ti.Pid != 0 {
		t.Fatalf("task %+v (found %v): it must still be provisioning", ti, ok)
	}
}

// Fifty connections of one user at once start exactly one task.
func TestStack_Connect_FiftyConnectsOneTask(t *testing.T) {
	defer dump(t)
	const user, n = "user_fifty", 50
	clients := make([]*testkit.Client, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tryDial(t, user)
			if err != nil {
				t.Error(err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, c := range clients {
		// Late connections may find the sandbox ready already.
		if f, ok := platform(c.Next()); !ok || (f.State != frames.Starting && f.State != frames.Ready) {
			t.Fatalf("client %d: first frame %+v", i, f)
		}
	}
	if runs := runTasks(user); len(runs) != 1 {
		t.Fatalf("%d RunTask calls for one user", len(runs))
	}
	conns, err := shared.Store.Connections(context.Background(), user)
	if err != nil || len(conns) != n {
		t.Fatalf("%d connection records, %v", len(conns), err)
	}
}

// Frames sent while the sandbox starts wait in the inbox and reach the workload in the
// order they were sent once it is ready; none is lost.
func TestStack_Message_FramesDuringStartInOrder(t *testing.T) {
	defer dump(t)
	const user, n = "user_order", 12
	shared.ECS.SetLaunchDelay(4 * time.Second)
	c := dial(t, user)
	shared.ECS.SetLaunchDelay(launchDelay)
	if f, ok := platform(c.Next()); !ok || f.State != frames.Starting {
		t.Fatalf("first frame %+v", f)
	}
	var sent []string
	for i := range n {
		m := fmt.Sprintf("frame-%02d", i)
		sent = append(sent, m)
		c.Send(m)
	}
	// Every frame was queued while the sandbox was starting (not delivered directly).
	deadline := time.Now().Add(testkit.Wait)
	for {
		q, err := shared.Store.Queued(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := shared.Store.Get(context.Background(), user)
		if q == n {
			break
		}
		if sb != nil && sb.State == state.Running || time.Now().After(deadline) {
			t.Fatalf("%d of %d frames queued before the sandbox was ready", q, n)
		}
		time.Sleep(20 * time.Millisecond) // polling the table: no event to await here
	}
	var got []string
	for len(got) < n {
		b := c.Next()
		if _, ok := platform(b); ok || bytes.Contains(b, []byte(`"type":"hello"`)) {
			continue
		}
		got = append(got, string(b))
	}
	if strings.Join(got, ",") != strings.Join(sent, ",") {
		t.Fatalf("workload echoed %q, want %q", got, sent)
	}
	// The agent deletes each inbox item after delivering it, asynchronously.
	for deadline := time.Now().Add(testkit.Wait); ; time.Sleep(20 * time.Millisecond) {
		q, err := shared.Store.Queued(context.Background(), user)
		if err == nil && q == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames left in the inbox after delivery (%v)", q, err)
		}
	}
}

// A user over the message rate limit hears rate_limited for the frames refused, and
// every frame is either echoed or refused; another user is unaffected.
func TestStack_Message_RateLimitedUserOnly(t *testing.T) {
	defer dump(t)
	fast, calm := dial(t, "user_fast"), dial(t, "user_calm")
	until(t, fast, "ready", isStatus(frames.Ready))
	until(t, calm, "ready", isStatus(frames.Ready))
	const n = 8 * rateLimit
	for i := range n {
		fast.Send(fmt.Sprintf("burst-%02d", i))
	}
	echoed, limited := 0, 0
	for echoed+limited < n {
		b := fast.Next()
		if f, ok := platform(b); ok {
			if f.Type == frames.TypeError && f.Reason == frames.ReasonRateLimited {
				limited++
			} else if f.Type == frames.TypeError {
				t.Fatalf("unexpected error frame %+v", f)
			}
			continue
		}
		if bytes.HasPrefix(b, []byte("burst-")) {
			echoed++
		}
	}
	if limited == 0 || echoed < 2*rateLimit {
		t.Fatalf("%d echoed, %d rate limited: want the burst through and the rest refused", echoed, limited)
	}
	for i := range 3 {
		calm.Send(fmt.Sprintf("calm-%d", i))
	}
	for i := 0; i < 3; {
		b := calm.Next()
		if f, ok := platform(b); ok && f.Type == frames.TypeError {
			t.Fatalf("the calm user heard %+v", f)
		}
		if bytes.HasPrefix(b, []byte("calm-")) {
			i++
		}
	}
}

// Prewarm starts the sandbox once; status reports it without starting anything; a bad
// signature gets a bare 401; a user sees only their own state.
func TestStack_StatusAndPrewarm(t *testing.T) {
	defer dump(t)
	const user = "user_prewarm"
	for i := range 2 {
		code, body := httpAPI(t, "POST", "/prewarm", signedQuery(t, user))
		if code != 202 || body["userId"] != user || (body["state"] != "STARTING" && body["state"] != "RUNNING") {
			t.Fatalf("prewarm %d: %d %v", i, code, body)
		}
	}
	if runs := runTasks(user); len(runs) != 1 {
		t.Fatalf("%d RunTask calls", len(runs))
	}
	code, body := httpAPI(t, "GET", "/status", signedQuery(t, user))
	if code != 200 || (body["state"] != "STARTING" && body["state"] != "RUNNING") || body["queued"] != 0.0 {
		t.Fatalf("status %d %v", code, body)
	}
	code, body = httpAPI(t, "GET", "/status", signedQuery(t, "user_neverseen"))
	if code != 200 || body["userId"] != "user_neverseen" || body["state"] != "STOPPED" || len(runTasks("user_neverseen")) != 0 {
		t.Fatalf("status of a new user %d %v", code, body)
	}
	tampered := strings.Replace(signedQuery(t, user), "userId="+user, "userId=user_neverseen", 1)
	for _, r := range []struct{ method, path string }{{"GET", "/status"}, {"POST", "/prewarm"}} {
		if code, body := httpAPI(t, r.method, r.path, tampered); code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
			t.Fatalf("%s tampered: %d %v", r.path, code, body)
		}
	}
}

// Cleanup through its bootstrap: a dead sandbox is reaped; an inactive user's data is
// deleted, an active user's is not; in DRY_RUN nothing is deleted.
func TestStack_Cleanup_ReapAndPurge(t *testing.T) {
	defer dump(t)
	ctx := context.Background()
	// Users who stopped two days ago (retention is one day here) and one who stopped now.
	past := state.New(dynamodb.NewFromConfig(shared.AWS), shared.Table)
	past.Now = func() time.Time { return time.Now().Add(-48 * time.Hour) }
	for _, u := range []string{"user_gone", "user_dryrun"} {
		stoppedUser(t, past, u)
	}
	stoppedUser(t, shared.Store, "user_active")
	b := bucket(t)
	for _, u := range []string{"user_gone", "user_dryrun", "user_active"} {
		putFiles(t, b, u, 3)
	}

	// DRY_RUN: the same bootstrap with DRY_RUN=true reports and deletes nothing.
	dry := cleanupFunction(t, "CleanupDryRun", map[string]string{"DRY_RUN": "true"})
	sum := invokeCleanup(t, dry)
	if !sum.DryRun || sum.WouldPurge < 2 || sum.Purged != 0 {
		t.Fatalf("dry run %+v", sum)
	}
	for _, u := range []string{"user_gone", "user_dryrun", "user_active"} {
		if n := countKeys(t, b, u); n != 3 {
			t.Fatalf("dry run left %d of %s's 3 keys", n, u)
		}
	}

	// Keep user_dryrun active from now on, to tell the real run's choice apart.
	stoppedUser(t, shared.Store, "user_dryrun")
	// A sandbox whose holder died: its start lease has already expired.
	dying := state.New(dynamodb.NewFromConfig(shared.AWS), shared.Table)
	dying.StartTTL = time.Millisecond
	if _, err := dying.Acquire(ctx, "user_dead"); err != nil {
		t.Fatal(err)
	}
	sum = invokeCleanup(t, "CleanupFunction")
	if sum.DryRun || sum.Reaped < 1 || sum.Purged < 1 {
		t.Fatalf("cleanup %+v", sum)
	}
	if sb, err := shared.Store.Get(ctx, "user_dead"); err != nil || sb.State != state.Stopped || sb.Reason != state.ReasonExpired {
		t.Fatalf("dead sandbox %+v, %v", sb, err)
	}
	if n := countKeys(t, b, "user_gone"); n != 0 {
		t.Fatalf("%d keys of the inactive user left", n)
	}
	for _, u := range []string{"user_dryrun", "user_active"} {
		if n := countKeys(t, b, u); n != 3 {
			t.Fatalf("%s lost data: %d keys left", u, n)
		}
	}
}

func stoppedUser(t *testing.T, s *state.Store, user string) {
	t.Helper()
	ctx := context.Background()
	l, err := s.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
}

func bucket(t *testing.T) *s3bucket.Bucket {
	t.Helper()
	client := s3.NewFromConfig(shared.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(shared.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
	return s3bucket.New(client, shared.Bucket)
}

func putFiles(t *testing.T, b *s3bucket.Bucket, user string, n int) {
	t.Helper()
	for i := range n {
		body := []byte(fmt.Sprintf("%s file %d", user, i))
		if _, err := b.Put(context.Background(), objsync.PutInput{Key: fmt.Sprintf("users/%s/files/f%d", user, i),
			Body: bytes.NewReader(body), Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
	}
}

func countKeys(t *testing.T, b *s3bucket.Bucket, user string) int {
	t.Helper()
	page, err := b.List(context.Background(), "users/"+user+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Objects)
}

// cleanupFunction registers the Cleanup bootstrap once more under name, with its
// template environment plus over.
func cleanupFunction(t *testing.T, name string, over map[string]string) string {
	t.Helper()
	f := shared.Template.Functions["CleanupFunction"]
	env := map[string]string{}
	for k, v := range f.Environment {
		env[k] = v
	}
	env["MANAGEMENT_ENDPOINT"] = shared.Gateway.ManagementEndpoint()
	for k, v := range over {
		env[k] = v
	}
	if err := shared.Runtime.Add(lambdart.Function{Name: name, Path: build.Dir + "/cleanup/bootstrap",
		Timeout: f.Timeout, MemoryMB: f.MemorySize, Env: env}); err != nil {
		t.Fatal(err)
	}
	return name
}

func invokeCleanup(t *testing.T, name string) cleanup.Summary {
	t.Helper()
	out, err := shared.Runtime.Invoke(context.Background(), shared.Name(name), []byte(`{}`))
	if err != nil {
		t.Fatalf("invoke %s: %v", name, err)
	}
	var sum cleanup.Summary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	return sum
}

// The sample events run through their functions' bootstraps: each has the shape its
// function expects (the signed samples are past their expiry, so status and prewarm
// refuse them).
func TestEvents_SamplesRunThroughTheirFunctions(t *testing.T) {
	defer dump(t)
	for _, c := range []struct {
		fn, file string
		status   int
	}{
		{"ConnectFunction", "connect.json", 200},
		{"MessageFunction", "message.json", 200},
		{"DisconnectFunction", "disconnect.json", 200},
		{"StatusFunction", "status.json", 401},
		{"PrewarmFunction", "prewarm.json", 401},
	} {
		ev, err := os.ReadFile("../events/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		out, err := shared.Runtime.Invoke(context.Background(), shared.Name(c.fn), ev)
		if err != nil {
			t.Fatalf("%s %s: %v", c.fn, c.file, err)
		}
		var resp struct{ StatusCode int }
		if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode != c.status {
			t.Fatalf("%s %s: %s, want status %d", c.fn, c.file, out, c.status)
		}
	}
	ev, err := os.ReadFile("../events/cleanup.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := shared.Runtime.Invoke(context.Background(), shared.Name("CleanupFunction"), ev)
	var sum cleanup.Summary
	if err != nil || json.Unmarshal(out, &sum) != nil {
		t.Fatalf("cleanup: %s, %v", out, err)
	}
}

// Events without an authorized user are refused by each route's bootstrap, with
// nothing written.
func TestStack_BadEvents_RefusedWithoutWrites(t *testing.T) {
	defer dump(t)
	before := tableKeys(t)
	for fn, file := range map[string]string{
		"ConnectFunction": "connect.json", "MessageFunction": "message.json", "DisconnectFunction": "disconnect.json",
	} {
		b, err := os.ReadFile("../events/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var ev events.APIGatewayWebsocketProxyRequest
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		ev.RequestContext.Authorizer = nil
		ev.RequestContext.ConnectionID = "bad-event-" + fn
		ev.QueryStringParameters = map[string]string{"userId": "user_intruder"}
		ev.Body = `{"userId":"user_intruder"}`
		payload, _ := json.Marshal(ev)
		out, err := shared.Runtime.Invoke(context.Background(), shared.Name(fn), payload)
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		var resp struct{ StatusCode int }
		if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode != 500 {
			t.Fatalf("%s: %s, want 500", fn, out)
		}
	}
	for k := range tableKeys(t) {
		if !before[k] && (strings.Contains(k, "intruder") || strings.Contains(k, "bad-event")) {
			t.Fatalf("a refused event wrote %s", k)
		}
	}
	if len(runTasks("user_intruder")) != 0 {
		t.Fatal("a refused event started a sandbox")
	}
}

func tableKeys(t *testing.T) map[string]bool {
	t.Helper()
	ddb := dynamodb.NewFromConfig(shared.AWS)
	keys := map[string]bool{}
	in := &dynamodb.ScanInput{TableName: aws.String(shared.Table), ConsistentRead: aws.Bool(true)}
	for {
		out, err := ddb.Scan(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range out.Items {
			pk, _ := it[state.AttrPK].(*types.AttributeValueMemberS)
			sk, _ := it[state.AttrSK].(*types.AttributeValueMemberS)
			if pk != nil && sk != nil {
				keys[pk.Value+"/"+sk.Value] = true
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return keys
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// A frame sent while the sandbox stops (here: its task is stopped, and its final sync
// is held up) waits in the inbox; a restart notice starts a new sandbox once the old
// one has stopped, which restores the user's files and delivers the frames in order.
func TestStack_Message_StoppingSandboxRestarts(t *testing.T) {
	defer dump(t)
	const user = "user_restart"
	ctx := context.Background()
	c := dial(t, user)
	until(t, c, "ready", isStatus(frames.Ready))
	sb, err := shared.Store.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	// Hold every storage request, so the stop's final sync keeps the sandbox STOPPING.
	if err := shared.S3.Faults.Inject(s3local.Fault{Latency: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	cleared := false
	clear := func() {
		if !cleared {
			shared.S3.Faults.Clear()
			cleared = true
		}
	}
	defer clear()
	c.Send("/note last words")
	until(t, c, "note.saved", func(b []byte) bool { return bytes.Contains(b, []byte(`"note.saved"`)) })
	ecsc := ecs.NewFromConfig(shared.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(shared.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
	if _, err := ecsc.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(shared.Cluster), Task: aws.String(sb.TaskARN)}); err != nil {
		t.Fatal(err)
	}
	until(t, c, "stopping", isStatus(frames.Stopping))
	c.Send("after-1")
	c.Send("after-2")
	// Both frames are queued for the next sandbox before the old one may finish.
	for deadline := time.Now().Add(testkit.Wait); ; time.Sleep(20 * time.Millisecond) {
		if q, _ := shared.Store.Queued(ctx, user); q == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the frames sent while stopping were not queued")
		}
	}
	if cur, _ := shared.Store.Get(ctx, user); cur == nil || cur.State != state.Stopping {
		t.Fatalf("record %+v: want STOPPING while the final sync is held", cur)
	}
	clear()
	var got []string
	for len(got) < 2 {
		b := c.Next()
		if bytes.HasPrefix(b, []byte("after-")) {
			got = append(got, string(b))
		}
	}
	if got[0] != "after-1" || got[1] != "after-2" {
		t.Fatalf("echoes %q", got)
	}
	c.Send("/notes")
	var notes struct{ Notes []string }
	until(t, c, "notes", func(b []byte) bool {
		return bytes.Contains(b, []byte(`"type":"notes"`)) && json.Unmarshal(b, &notes) == nil
	})
	if len(notes.Notes) != 1 || notes.Notes[0] != "last words" {
		t.Fatalf("notes after the restart: %q", notes.Notes)
	}
	now, err := shared.Store.Get(ctx, user)
	if err != nil || now.Generation != sb.Generation+1 || len(runTasks(user)) != 2 {
		t.Fatalf("record %+v, %v, %d RunTask calls", now, err, len(runTasks(user)))
	}
}
