package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/r2creds"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/vend"
	"github.com/sandgate/sandgate/internal/webhook"
)

// The tests in this file run the application with its bucket in Cloudflare R2 (the
// local stack's R2 mode): the vendor mints each sandbox R2 temporary credentials for
// users/<id>/ from the parent key only it (and Cleanup) reads, and the bucket answers
// as R2 does, without IAM. What the local R2 cannot tell about R2 itself is listed in
// docs/ARCHITECTURE.md.

// r2apps is the one R2 stack of the package, started by the first test that needs it:
// the settings of apps, storage in R2.
var r2apps = testkit.Shared{Options: func(o *stack.Options) {
	o.R2 = true
	o.LaunchDelay = launchDelay
	o.Params = map[string]string{"RetentionDays": "1"}
	o.Overrides = map[string]string{"SYNC_INTERVAL": "1s", "LOG_LEVEL": "DEBUG"}
}}

func TestR2_Vend_OnlyTheRecordedTaskWithTheCurrentLease(t *testing.T) {
	t.Parallel()
	vendsOnlyToTheHolder(t, r2apps.Get(t))
}

// Everything the vendor hands a sandbox in R2 mode — its AWS session and its R2
// temporary credentials, all a compromised agent holds — reaches its user's items and
// objects and nothing of another user's, as in S3 mode.
func TestR2_SandboxCredentials_CannotTouchAnotherUser(t *testing.T) {
	t.Parallel()
	s := r2apps.Get(t)
	f := newVictim(t, s)
	creds, err := vendAs(t, s, s.TaskRoleSession(t, f.task), vendRequest(f.lease))
	if err != nil {
		t.Fatalf("the attacker's own task: %v", err)
	}
	if creds.Storage == nil {
		t.Fatal("the vendor handed no R2 credentials")
	}
	st := creds.Storage
	bucket := s.StorageAs(credentials.NewStaticCredentialsProvider(st.AccessKeyID, st.SecretAccessKey, st.SessionToken))
	attackAnotherUser(t, s, f, sessionOf(s, creds), bucket)
}

// A sandbox runs end to end on vended R2 credentials: its syncs (periodic and the
// final one on stop) land under users/<id>/ and nowhere else, and the next sandbox
// restores them; the parent key is never in what a task holds.
func TestR2_Sandbox_SyncsAndRestoresOnVendedCredentials(t *testing.T) {
	t.Parallel()
	s := r2apps.Get(t)
	user := "user_r2run" + randomHex(4)
	c := s.DialReady(t, user, coldStart)
	sb := s.Running(t, user, reply)
	c.Note("kept in r2", reply)
	s.NotesSynced(t, user, 1, reply)
	parentKeyNotHeld(t, s, sb)

	// Written after the last periodic sync it may have seen: the final sync saves it.
	blob := randomBytes(t, 200<<10)
	writeFile(t, s.Workspace(t, sb.TaskARN), "data/blob.bin", blob)
	s.StopTask(t, sb.TaskARN)
	c.Status(frames.Stopping, reply)
	if code := s.ExitCode(t, sb.TaskARN, coldStart); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if got := s.Object(t, user, "data/blob.bin"); !bytes.Equal(got, blob) {
		t.Fatalf("stored blob: %d bytes, want %d", len(got), len(blob))
	}
	if m := s.Marker(t, user); m == nil || m.Generation != sb.Generation {
		t.Fatalf("marker %+v, want generation %d", m, sb.Generation)
	}
	prefix := taskenv.UserPrefix(user)
	for _, k := range s.Keys(t, "") {
		if strings.Contains(k, user) && !strings.HasPrefix(k, prefix) {
			t.Errorf("%s wrote %s, outside %s", user, k, prefix)
		}
	}

	c.Send(`{"type":"notes"}`)
	c.Status(frames.Ready, coldStart)
	if n := testkit.NotesOf(c.JSONFrame("notes", reply)); !slices.Equal(n, []string{"kept in r2"}) {
		t.Fatalf("restored notes %q", n)
	}
	next := replaced(t, s, user, sb)
	b, err := os.ReadFile(filepath.Join(s.Workspace(t, next.TaskARN), "data", "blob.bin"))
	if err != nil || !bytes.Equal(b, blob) {
		t.Fatalf("restored blob: %d bytes, %v", len(b), err)
	}
}

// parentKeyNotHeld checks that the parent R2 key is nowhere a task or its caller can
// read: not in the running task's environment (as ECS started its process), not in
// its RunTask overrides nor DescribeTasks, not in any log line of the stack; and that
// the vendor returns the task temporary credentials only — R2's temporary credentials
// reuse the parent's access key id (documented), never its secret — for its user's
// prefix, read and write, in the stack's bucket, expiring with the session.
func parentKeyNotHeld(t *testing.T, s *testkit.Stack, sb *state.Sandbox) {
	t.Helper()
	ctx := context.Background()
	p := s.R2
	holds := func(where, text string) {
		t.Helper()
		if strings.Contains(text, p.SecretAccessKey) {
			t.Errorf("%s holds the parent secret key", where)
		}
	}
	env := s.Task(t, sb.TaskARN).Environment
	if len(env) == 0 {
		t.Fatal("ecslocal recorded no environment for the task")
	}
	for _, kv := range env {
		holds("the task's environment ("+strings.SplitN(kv, "=", 2)[0]+")", kv)
		if strings.Contains(kv, p.AccessKeyID) {
			t.Errorf("the task's environment names the parent key id (%s)", strings.SplitN(kv, "=", 2)[0])
		}
	}
	for _, r := range s.RunTasks(sb.UserID) {
		b, _ := json.Marshal(r)
		holds("RunTask", string(b))
	}
	out, err := s.ECSClient().DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(s.Cluster), Tasks: []string{sb.TaskARN}})
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("DescribeTasks: %v", err)
	}
	b, _ := json.Marshal(out.Tasks[0])
	holds("DescribeTasks", string(b))
	for _, l := range s.Output.Lines(func(testkit.Line) bool { return true }) {
		b, _ := json.Marshal(l.Fields)
		holds("a log line ("+l.Source+": "+l.Msg+")", string(b))
	}

	// The vendor's answer, whole, to the task itself with its lease.
	task := sb.TaskARN[strings.LastIndex(sb.TaskARN, "/")+1:]
	role := s.TaskRoleSession(t, task)
	fu, err := funcurl.NewClient(s.FunctionURL(t, "VendFunction"), role.Credentials, role.Region, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(vend.Request{UserID: sb.UserID, Generation: sb.Generation, LeaseToken: sb.LeaseToken})
	resp, err := fu.Post(ctx, vend.PathCredentials, body)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("the vendor to the task: %v %+v", err, resp)
	}
	holds("the vendor's answer", string(resp.Body))
	var creds vend.Credentials
	if err := json.Unmarshal(resp.Body, &creds); err != nil || creds.Storage == nil {
		t.Fatalf("the vendor's answer: %v, storage %v", err, creds.Storage != nil)
	}
	st := creds.Storage
	if st.AccessKeyID != p.AccessKeyID || st.SecretAccessKey == p.SecretAccessKey || st.SessionToken == "" {
		t.Errorf("storage credentials: key id %q (parent's %q), a secret of their own %v", st.AccessKeyID, p.AccessKeyID, st.SecretAccessKey != p.SecretAccessKey)
	}
	c := r2Claims(t, st.SessionToken)
	if c.Bucket != s.Bucket || c.Scope != r2creds.ObjectReadWrite || c.Paths == nil ||
		!slices.Equal(c.Paths.PrefixPaths, []string{taskenv.UserPrefix(sb.UserID)}) || len(c.Paths.ObjectPaths) != 0 {
		t.Errorf("the temporary credential's scope: %+v", c)
	}
	if exp := time.Unix(c.Expiry, 0); exp.After(creds.Expiration.Add(time.Second)) || !st.Expiration.Equal(exp) {
		t.Errorf("the temporary credential expires %v (says %v), the session %v", exp, st.Expiration, creds.Expiration)
	}
}

// r2Claims reads an R2 temporary credential's session token: base64 of "jwt/" and
// the JWT, whose payload is its claims.
func r2Claims(t *testing.T, token string) r2creds.Claims {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(token)
	jwt, ok := strings.CutPrefix(string(raw), r2creds.TokenPrefix)
	parts := strings.Split(jwt, ".")
	if err != nil || !ok || len(parts) != 3 {
		t.Fatalf("session token is not base64 of jwt/<JWT>: %v", err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c r2creds.Claims
	if err != nil || json.Unmarshal(payload, &c) != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return c
}

// Cleanup works with R2: it reads the parent key and purges an inactive user's
// prefix, leaving an active user's. It reads the whole table, so it runs while no
// parallel test uses the R2 stack.
func TestR2_Cleanup_PurgesWithTheParentKey(t *testing.T) {
	s := r2apps.Get(t)
	clock := testkit.NewClock()
	clock.Advance(-48 * time.Hour)
	past := state.New(dynamodb.NewFromConfig(s.AWS), s.Table)
	past.Now = clock.Now
	gone, active := "user_r2gone"+randomHex(4), "user_r2active"+randomHex(4)
	stoppedUser(t, past, gone)
	stoppedUser(t, s.Store, active)
	for _, u := range []string{gone, active} {
		putFiles(t, s, u, 3)
	}
	sum := invokeCleanup(t, s, "CleanupFunction")
	if sum.DryRun || sum.Purged != 1 {
		t.Fatalf("cleanup %+v, want one user purged", sum)
	}
	if keys := s.Keys(t, taskenv.UserPrefix(gone)); len(keys) != 0 {
		t.Fatalf("%d keys of the inactive user left: %s", len(keys), fmt.Sprint(keys))
	}
	if n := len(s.Keys(t, taskenv.UserPrefix(active))); n != 3 {
		t.Fatalf("the active user lost data: %d keys left", n)
	}
}

// Deleting a user works with R2: the erase function (the identity provider's
// delete-user) reads the parent key and deletes the user's prefix, after stopping
// their sandbox and closing their connection; another user's prefix is untouched.
func TestR2_Erase_DeletesWithTheParentKey(t *testing.T) {
	t.Parallel()
	s := r2apps.Get(t)
	gone, kept := "user_r2erased"+randomHex(4), "user_r2kept"+randomHex(4)
	c := s.DialReady(t, gone, coldStart)
	for _, u := range []string{gone, kept} {
		putFiles(t, s, u, 3)
	}
	payload, _ := json.Marshal(webhook.EraseRequest{UserID: gone, WebhookID: "msg_r2"})
	if _, err := s.Runtime.Invoke(context.Background(), s.Name("EraseFunction"), payload); err != nil {
		t.Fatalf("erase: %v", err)
	}
	select {
	case <-c.Closed():
	case <-time.After(reply):
		t.Error("the erased user's connection is still open")
	}
	if keys := s.Keys(t, taskenv.UserPrefix(gone)); len(keys) != 0 {
		t.Fatalf("%d keys of the erased user left: %v", len(keys), keys)
	}
	if n := len(s.Keys(t, taskenv.UserPrefix(kept))); n != 3 {
		t.Fatalf("the other user lost data: %d keys left", n)
	}
	if _, err := s.Store.Get(context.Background(), gone); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the erased user's record: %v", err)
	}
}
