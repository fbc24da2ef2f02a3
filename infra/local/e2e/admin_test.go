package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// make admin against the local stack: the command built as the Makefile builds it, run
// with the stack's aws.env as an operator runs it (-aws-env), its audit lines naming
// the operator as STS does.

var adminBin struct {
	once sync.Once
	path string
	err  error
}

// admin runs the admin command on s with args; it returns stdout, stderr and the exit
// code.
func admin(t *testing.T, s *testkit.Stack, stdin string, args ...string) (string, string, int) {
	t.Helper()
	adminBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "sandgate-admin-")
		if err != nil {
			adminBin.err = err
			return
		}
		adminBin.path = filepath.Join(dir, "admin")
		if out, err := exec.Command("go", "build", "-o", adminBin.path, "../../admin/cmd").CombinedOutput(); err != nil {
			adminBin.err = fmt.Errorf("build admin: %v\n%s", err, out)
		}
	})
	if adminBin.err != nil {
		t.Fatal(adminBin.err)
	}
	dir := t.TempDir()
	env := filepath.Join(dir, stack.AWSEnvFile)
	if err := s.WriteAWSEnv(env); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(adminBin.path, append([]string{"-aws-env", env}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	}
	t.Fatalf("admin %v: %v", args, err)
	return "", "", -1
}

// mustAdmin is admin that fails the test unless the command exits 0.
func mustAdmin(t *testing.T, s *testkit.Stack, args ...string) (string, string) {
	t.Helper()
	out, errOut, code := admin(t, s, "", args...)
	if code != 0 {
		t.Fatalf("admin %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out, errOut
}

// auditLine returns the audit line of action in stderr, failing when there is none or
// it does not name the operator.
func auditLine(t *testing.T, stderr, action, user string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["audit"] != true || m["action"] != action {
			continue
		}
		if caller, _ := m["caller"].(string); !strings.HasPrefix(caller, "arn:aws:iam::"+stack.AccountID+":user/") {
			t.Fatalf("audit line of %s names caller %q, want the operator's ARN: %s", action, m["caller"], line)
		}
		if user != "" && m["userId"] != user {
			t.Fatalf("audit line of %s names user %v, want %s", action, m["userId"], user)
		}
		return m
	}
	t.Fatalf("no audit line of %s in:\n%s", action, stderr)
	return nil
}

// A user stuck starting (ECS holds the launch in PENDING) shows as such in list and
// inspect, and stop fixes it: the task stopped, the record STOPPED with its slot back,
// and the user's next connect gets a sandbox. Then reconcile puts a drifted capacity
// counter right, as the cleanup pass would; bad input gets a clear message.
func TestAdmin_StuckUserInspectedAndStopped(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)
	const stuck, other = "user_adminstuck", "user_adminother"
	s.DialReady(t, other, coldStart)

	release := s.ECS.HoldLaunches()
	defer release()
	c := s.Dial(t, stuck)
	c.Status(frames.Starting, reply)
	sb := s.WaitState(t, stuck, coldStart, "starting with a task", func(sb *state.Sandbox) bool {
		return sb.State == state.Starting && sb.TaskARN != ""
	})
	testkit.Eventually(t, coldStart, func() bool { return s.Task(t, sb.TaskARN).LastStatus == "PENDING" },
		func() string { return "the held task never reached PENDING" })

	out, errOut := mustAdmin(t, s, "list")
	for _, want := range []string{stuck, other, "STARTING", "RUNNING", "PENDING"} {
		if !strings.Contains(out, want) {
			t.Errorf("list: no %q in\n%s", want, out)
		}
	}
	auditLine(t, errOut, "list", "")
	out, _ = mustAdmin(t, s, "list", "-json", "-state", "STARTING")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0]["userId"] != stuck || rows[0]["taskStatus"] != "PENDING" {
		t.Fatalf("list -json -state STARTING: %v\n%s", err, out)
	}

	out, errOut = mustAdmin(t, s, "inspect", stuck)
	for _, want := range []string{"sandbox:      STARTING", "PENDING", "connections:  1", "holds a slot: true"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect: no %q in\n%s", want, out)
		}
	}
	auditLine(t, errOut, "inspect", stuck)

	out, errOut = mustAdmin(t, s, "stop", "-wait", "-timeout", "90s", stuck)
	if !strings.Contains(out, stuck+": stop requested (was STARTING") || !strings.Contains(out, "its capacity slot is back") {
		t.Errorf("stop -wait:\n%s", out)
	}
	if a := auditLine(t, errOut, "stop", stuck); a["result"] != "ok" {
		t.Errorf("stop's audit line: %v", a)
	}
	rec, err := s.Store.Get(context.Background(), stuck)
	if err != nil || rec.State != state.Stopped || rec.HoldsSlot() {
		t.Fatalf("after stop: %+v, %v", rec, err)
	}
	s.ExactCapacity(t, 1)
	release()
	c.Close()
	s.DialReady(t, stuck, coldStart)
	if n := len(s.RunTasks(stuck)); n != 2 {
		t.Errorf("%d launches for the stuck user, want 2 (the stopped one, the next)", n)
	}

	// A counter that drifted (a lost event the arithmetic cannot see) is corrected.
	drift(t, s, 3)
	out, errOut = mustAdmin(t, s, "reconcile")
	if !strings.Contains(out, "capacity counter corrected: 5 → 2") || !strings.Contains(out, "running tasks no live lease names: 0") {
		t.Errorf("reconcile:\n%s", out)
	}
	auditLine(t, errOut, "reconcile", "")
	s.ExactCapacity(t, 2)
	if out, _ := mustAdmin(t, s, "reconcile"); !strings.Contains(out, "capacity counter right: 2") {
		t.Errorf("reconcile again:\n%s", out)
	}

	// Bad input: each a clear message, exit 1 or 2, nothing changed.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inspect", "user_nobodyhere"}, 1, "unknown user"},
		{[]string{"stop", "user_nobodyhere"}, 1, "unknown user"},
		{[]string{"inspect", "USER_x"}, 1, "not a user id"},
		{[]string{"revoke", "user_a/../b"}, 1, "not a user id"},
		{[]string{"inspect"}, 2, "want one user id"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	} {
		out, errOut, code := admin(t, s, "", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("admin %v: exit %d, stderr %q; want exit %d with %q (stdout %q)", tc.args, code, errOut, tc.code, tc.want, out)
		}
	}
}

// drift adds n to the capacity counter behind the functions' back.
func drift(t *testing.T, s *testkit.Stack, n int) {
	t.Helper()
	_, err := dynamodb.NewFromConfig(s.AWS).UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName: aws.String(s.Table),
		Key: map[string]types.AttributeValue{
			state.AttrPK: &types.AttributeValueMemberS{Value: "CAPACITY"}, state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOXES"},
		},
		UpdateExpression:          aws.String("ADD live :n"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: fmt.Sprint(n)}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The lifetime and skew of the revocation test's stack: short, so a fresh URL is
// accepted within the test.
const (
	revokeLifetime = 20 * time.Second
	revokeSkew     = time.Second
)

// signed returns a URL for user signed now with ttl.
func signed(t *testing.T, s *testkit.Stack, user string, ttl time.Duration) string {
	t.Helper()
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	signer.TTL = ttl
	u, err := signer.SignURL(s.Gateway.WebSocketURL(), user)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func queryOf(u string) string { _, q, _ := strings.Cut(u, "?"); return q }

// revoke closes every connection of the user and refuses their URLs signed before it
// on the WebSocket and the HTTP API alike, while another user is untouched; no warm
// pool task is claimed (nor any task launched) for the revoked user meanwhile; a URL
// signed after it is accepted once its exp lies beyond what an earlier one could carry.
func TestAdmin_RevokeRefusesOldURLsAcceptsFreshOnes(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) {
		o.Params = map[string]string{"PoolSize": "1"}
		noIdleStop(o)
		o.Overrides["SIGNATURE_MAX_LIFETIME"] = revokeLifetime.String()
		o.Overrides["SIGNATURE_CLOCK_SKEW"] = revokeSkew.String()
	})
	const user, other = "user_adminrevoked", "user_adminbystander"
	refill(t, s)
	s.WaitPool(t, 1, coldStart)

	first := signed(t, s, user, revokeLifetime)
	c1, err := testkit.DialAs(t, first, user)
	if err != nil {
		t.Fatal(err)
	}
	c1.Status(frames.Ready, coldStart)
	c2, err := testkit.DialAs(t, signed(t, s, user, revokeLifetime), user)
	if err != nil {
		t.Fatal(err)
	}
	c2.Status(frames.Ready, reply)
	bystander, err := testkit.DialAs(t, signed(t, s, other, revokeLifetime), other)
	if err != nil {
		t.Fatal(err)
	}
	bystander.Status(frames.Ready, coldStart)
	pool := s.WaitPool(t, 1, coldStart) // refilled after the user's claim
	launchesBefore := len(s.RunTasks(user))
	claimsBefore := claimsOf(t, s, user)

	old := signed(t, s, user, revokeLifetime) // signed before the revocation, unused until after
	out, errOut := mustAdmin(t, s, "revoke", user)
	if !strings.Contains(out, user+": revoked at ") || !strings.Contains(out, "closed 2 connection(s)") {
		t.Errorf("revoke:\n%s", out)
	}
	if a := auditLine(t, errOut, "revoke", user); a["result"] != "ok" {
		t.Errorf("revoke's audit line: %v", a)
	}
	for _, c := range []*testkit.Client{c1, c2} {
		select {
		case <-c.Closed():
		case <-time.After(reply):
			t.Fatal("a connection of the revoked user is still open")
		}
	}
	nb, err := s.Store.NotBefore(context.Background(), user)
	if err != nil || nb.IsZero() {
		t.Fatalf("no revocation recorded: %v", err)
	}

	// The old URL, on the WebSocket and the HTTP API: refused, and no start.
	if c, err := testkit.DialAs(t, old, user); err == nil {
		c.Close()
		t.Fatal("the old URL still connects")
	}
	for _, r := range []struct{ method, path string }{{http.MethodGet, "/status"}, {http.MethodPost, "/prewarm"}} {
		if code, body := s.HTTP(t, r.method, r.path, queryOf(old)); code != http.StatusUnauthorized {
			t.Errorf("%s %s with the old URL: %d %v", r.method, r.path, code, body)
		}
	}
	// Signed after the revocation but within its skew: may be older, refused too.
	if c, err := testkit.DialAs(t, signed(t, s, user, revokeLifetime), user); err == nil && time.Now().Before(nb.Add(revokeSkew)) {
		c.Close()
		t.Fatal("a URL within the skew of the revocation connects")
	}
	if got := s.Pool(t); len(got) != 1 || got[0].ID != pool[0].ID || got[0].State != state.PoolWaiting {
		t.Errorf("the pool after the revoked user's attempts: %+v, want %s waiting", got, pool[0].ID)
	}
	if n := len(s.RunTasks(user)); n != launchesBefore {
		t.Errorf("%d launches for the revoked user, want %d", n, launchesBefore)
	}
	if got := claimsOf(t, s, user); !slices.Equal(got, claimsBefore) {
		t.Errorf("pool claims of the revoked user: %v, want %v", got, claimsBefore)
	}
	// The bystander is untouched.
	bystander.Note("still here", reply)

	// A fresh URL: accepted once its exp lies past the revocation plus lifetime and
	// skew (the revocation's own rule: nothing to poll for but the clock).
	from := auth.AcceptedFrom(nb, revokeLifetime, revokeLifetime, revokeSkew)
	if d := time.Until(from); d > 0 {
		<-time.After(d)
	}
	fresh, err := testkit.DialAs(t, signed(t, s, user, revokeLifetime), user)
	if err != nil {
		t.Fatalf("a URL signed at %s, after the revocation at %s: %v", time.Now().Format(time.RFC3339Nano), nb.Format(time.RFC3339Nano), err)
	}
	fresh.Status(frames.Ready, coldStart)
	if code, body := s.HTTP(t, http.MethodGet, "/status", queryOf(signed(t, s, user, revokeLifetime))); code != http.StatusOK {
		t.Errorf("status with a fresh URL: %d %v", code, body)
	}
}

// claimsOf lists the pool claim items naming user.
func claimsOf(t *testing.T, s *testkit.Stack, user string) []string {
	t.Helper()
	keys, err := s.Store.UserItems(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if k.PK == "POOLCLAIM" {
			out = append(out, k.SK)
		}
	}
	return out
}

// delete-user: a dry run changes nothing; then the user's sandbox stops, their prefix
// and items are gone but for the access item reduced to the revocation, nothing of
// another user is touched (their items, objects and sandbox), and a second run finds
// nothing more to delete.
func TestAdmin_DeleteUserLeavesNothingOfTheirs(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)
	const gone, kept = "user_admingone", "user_adminkept"
	clients := map[string]*testkit.Client{}
	for _, u := range []string{gone, kept} {
		clients[u] = s.DialReady(t, u, coldStart)
		clients[u].Note("note of "+u, reply)
		s.NotesSynced(t, u, 1, coldStart)
	}
	keptItems := userKeys(t, s, kept)
	keptObjects := s.Keys(t, "users/"+kept+"/")
	goneObjects := s.Keys(t, "users/"+gone+"/")
	if len(goneObjects) == 0 || len(keptObjects) == 0 {
		t.Fatalf("nothing synced: %v %v", goneObjects, keptObjects)
	}

	out, errOut := mustAdmin(t, s, "delete-user", "-dry-run", gone)
	if !strings.Contains(out, fmt.Sprintf("objects:  %d under users/%s/", len(goneObjects), gone)) || !strings.Contains(out, "dry run: nothing deleted") {
		t.Errorf("dry run:\n%s", out)
	}
	auditLine(t, errOut, "delete-user (dry run)", gone)
	if got := s.Keys(t, "users/"+gone+"/"); len(got) != len(goneObjects) {
		t.Fatalf("the dry run deleted objects: %v", got)
	}
	if _, err := s.Store.Get(context.Background(), gone); err != nil {
		t.Fatalf("the dry run touched the record: %v", err)
	}

	// Without -yes it asks, and a wrong answer does nothing.
	if _, errOut, code := admin(t, s, "someone_else\n", "delete-user", gone); code != 1 || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("unconfirmed delete: exit %d, %s", code, errOut)
	}
	out, errOut, code := admin(t, s, gone+"\n", "delete-user", gone)
	if code != 0 || !strings.Contains(out, gone+": deleted ") {
		t.Fatalf("delete-user: exit %d\n%s\n%s", code, out, errOut)
	}
	if a := auditLine(t, errOut, "delete-user", gone); a["result"] != "ok" {
		t.Errorf("delete-user's audit line: %v", a)
	}
	select {
	case <-clients[gone].Closed():
	case <-time.After(reply):
		t.Error("the deleted user's connection is still open")
	}
	if got := s.Keys(t, "users/"+gone+"/"); len(got) != 0 {
		t.Errorf("objects of the deleted user left: %v", got)
	}
	if got := userKeys(t, s, gone); !slices.Equal(got, []string{"ACCESS#" + gone + "/ACCESS"}) {
		t.Errorf("items of the deleted user left: %v (want the access item's revocation only)", got)
	}
	if code, _ := s.HTTP(t, http.MethodGet, "/status", s.SignedQuery(t, gone)); code != http.StatusUnauthorized {
		t.Errorf("the deleted user's URL answers %d", code)
	}

	if got := userKeys(t, s, kept); !slices.Equal(got, keptItems) {
		t.Errorf("the other user's items: %v, were %v", got, keptItems)
	}
	if got := s.Keys(t, "users/"+kept+"/"); !slices.Equal(got, keptObjects) {
		t.Errorf("the other user's objects: %v, were %v", got, keptObjects)
	}
	clients[kept].Note("after the deletion", reply)
	s.ExactCapacity(t, 1)

	if out, _ := mustAdmin(t, s, "delete-user", "-yes", gone); !strings.Contains(out, "deleted 0 object(s), 0 backup object(s) and 0 item(s)") {
		t.Errorf("a second delete-user:\n%s", out)
	}
}

// userKeys returns every table key (pk/sk) that holds something of user, sorted.
func userKeys(t *testing.T, s *testkit.Stack, user string) []string {
	t.Helper()
	var out []string
	for k := range s.TableKeys(t) {
		pk, _, _ := strings.Cut(k, "/")
		if strings.HasSuffix(pk, "#"+user) {
			out = append(out, k)
		}
	}
	for _, c := range claimsOf(t, s, user) {
		out = append(out, "POOLCLAIM/"+c)
	}
	slices.Sort(out)
	return out
}

// import-bucket copies a bucket of the original design — per-user trees and the flat
// root tree — into users' prefixes as the agent restores them: a dry run reports what
// maps where and what is skipped (a bad id, a live sandbox, the flat tree without an
// owner, keys that map nowhere) and copies nothing; the run copies server-side and
// verified, leaves a conflicting file alone, writes each user's marker; a second run
// copies nothing; an imported user's sandbox restores the files.
func TestAdmin_ImportBucketOfTheOriginalDesign(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)
	ctx := context.Background()
	const source = "sandgate-original"
	s3c := s.S3Client()
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(source)}); err != nil {
		t.Fatal(err)
	}
	fixture := map[string]string{
		"users/user_importa/config/clawdbot.json": `{"agent":{"model":"claude"}}`,
		"users/user_importa/workspace/notes/a.md": "# a note\n",
		"users/user_importa/.last-sync":           "2025-11-30T10:00:00Z",
		"users/user_importa/cache/tmp.bin":        "not the design's",
		"users/user_importb/workspace/x.txt":      "x",
		"users/user_importc/workspace/y.txt":      "the original y",
		"users/user_importlive/config/c.json":     "{}",
		"users/bad.id/config/clawdbot.json":       "{}",
		"config/clawdbot.json":                    `{"shared":true}`,
		"workspace/shared.md":                     "everyone's",
		".last-sync":                              "2025-01-01T00:00:00Z",
		"random.txt":                              "stray",
	}
	for k, v := range fixture {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(source), Key: aws.String(k), Body: strings.NewReader(v)}); err != nil {
			t.Fatal(err)
		}
	}
	// user_importc already has another y.txt in sandgate; user_importlive is connected.
	conflict := "users/user_importc/files/workspace/y.txt"
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(conflict), Body: strings.NewReader("sandgate's y")}); err != nil {
		t.Fatal(err)
	}
	s.DialReady(t, "user_importlive", coldStart)
	testkit.Eventually(t, coldStart, func() bool { return s.Marker(t, "user_importlive") != nil },
		func() string { return "the live sandbox never synced" })
	before := s.Keys(t, "users/")

	out, errOut := mustAdmin(t, s, "import-bucket", "-source-bucket", source, "-dry-run")
	for _, want := range []string{
		"users/user_importa/config/clawdbot.json  → users/user_importa/files/config/clawdbot.json",
		"would copy",
		"user_importlive", "skipped: live sandbox (RUNNING)",
		"users/bad.id/", "not a user id",
		"config/clawdbot.json", "no owner named (-flat-to userId)",
		"random.txt", "does not map",
		"users/user_importa/cache/tmp.bin",
		"dry run, nothing copied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run: no %q in\n%s", want, out)
		}
	}
	auditLine(t, errOut, "import-bucket", "")
	if got := s.Keys(t, "users/"); !slices.Equal(got, before) {
		t.Fatalf("the dry run wrote: %v", got)
	}

	out, _ = mustAdmin(t, s, "import-bucket", "-source-bucket", source, "-flat-to", "user_importflat")
	if !strings.Contains(out, "(server-side copies)") || !strings.Contains(out, "5 copied") || !strings.Contains(out, "1 conflict(s) left alone") {
		t.Errorf("import:\n%s", out)
	}
	for src, dst := range map[string]string{
		"users/user_importa/config/clawdbot.json": "users/user_importa/files/config/clawdbot.json",
		"users/user_importa/workspace/notes/a.md": "users/user_importa/files/workspace/notes/a.md",
		"users/user_importb/workspace/x.txt":      "users/user_importb/files/workspace/x.txt",
		"config/clawdbot.json":                    "users/user_importflat/files/config/clawdbot.json",
		"workspace/shared.md":                     "users/user_importflat/files/workspace/shared.md",
	} {
		info, body, err := s.Objects().Get(ctx, dst)
		if err != nil {
			t.Errorf("%s: %v", dst, err)
			continue
		}
		b, _ := io.ReadAll(body)
		body.Close()
		sum := sha256.Sum256([]byte(fixture[src]))
		if string(b) != fixture[src] || info.Meta["sha256"] != hex.EncodeToString(sum[:]) || info.Meta["type"] != "file" {
			t.Errorf("%s: %q, meta %v; want %q from %s", dst, b, info.Meta, fixture[src], src)
		}
	}
	for _, u := range []string{"user_importa", "user_importb", "user_importflat"} {
		if m := s.Marker(t, u); m == nil || m.Files == 0 {
			t.Errorf("%s: marker %+v", u, m)
		}
	}
	if got := s.Object(t, "user_importc", "workspace/y.txt"); string(got) != "sandgate's y" {
		t.Errorf("the conflicting file was overwritten: %q", got)
	}
	for _, k := range s.Keys(t, "users/") {
		if strings.Contains(k, "importlive") && !slices.Contains(before, k) || strings.Contains(k, "bad.id") || strings.Contains(k, "cache") {
			t.Errorf("imported what must be skipped: %s", k)
		}
	}
	after := s.Keys(t, "users/")

	out, _ = mustAdmin(t, s, "import-bucket", "-source-bucket", source, "-flat-to", "user_importflat")
	if !strings.Contains(out, "0 copied (0 bytes), 5 already present, 1 conflict(s)") {
		t.Errorf("second run:\n%s", out)
	}
	if got := s.Keys(t, "users/"); !slices.Equal(got, after) {
		t.Errorf("the second run wrote: %v, was %v", got, after)
	}
	for k := range fixture {
		if _, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(source), Key: aws.String(k)}); err != nil {
			t.Errorf("the source lost %s: %v", k, err)
		}
	}

	// The agent restores an imported user's files into the workspace.
	s.DialReady(t, "user_importa", coldStart)
	sb := s.Running(t, "user_importa", reply)
	got, err := os.ReadFile(filepath.Join(s.Workspace(t, sb.TaskARN), "config", "clawdbot.json"))
	if err != nil || string(got) != fixture["users/user_importa/config/clawdbot.json"] {
		t.Errorf("restored config/clawdbot.json: %q, %v", got, err)
	}
}
