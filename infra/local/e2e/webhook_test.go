package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

// clerkDelivery POSTs a Clerk event to the stack's /webhooks/clerk as Svix delivers it,
// signed with secret under message id at ts; it returns the status and the body.
func clerkDelivery(t *testing.T, s *testkit.Stack, secret, id string, ts time.Time, body string) (int, string) {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.Gateway.HTTPURL()+"/webhooks/clerk", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", fmt.Sprint(ts.Unix()))
	req.Header.Set("svix-signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func clerkEvent(typ, user string) string {
	return fmt.Sprintf(`{"data":{"deleted":true,"id":%q,"object":"user"},"object":"event","timestamp":%d,"type":%q}`,
		user, time.Now().UnixMilli(), typ)
}

// Clerk's user.deleted, signed with the endpoint's secret (kept in the stack's Secrets
// Manager, read by the function at run time): the user's sandbox stops, their
// connection is closed, their objects and items are deleted but for the revocation,
// and the other user is untouched; the same message again, a forged one, a stale one
// and another event type delete nothing more. The erase function's audit line names
// its own role session, as STS does.
func TestWebhook_ClerkUserDeletedErasesTheUser(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	sm := secretsmanager.NewFromConfig(s.AWS, func(o *secretsmanager.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_SECRETS_MANAGER"])
	})
	if _, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String("sandgate/clerk-webhook"), SecretString: aws.String(secret)}); err != nil {
		t.Fatal(err)
	}
	const gone, kept = "user_clerkgone", "user_clerkkept"
	clients := map[string]*testkit.Client{}
	for _, u := range []string{gone, kept} {
		clients[u] = s.DialReady(t, u, coldStart)
		clients[u].Note("note of "+u, reply)
		s.NotesSynced(t, u, 1, coldStart)
		// The sync writes the note, then its marker: wait for both before the snapshot.
		testkit.Eventually(t, reply, func() bool { m := s.Marker(t, u); return m != nil && m.Files == 1 },
			func() string { return u + ": no marker counting the note" })
	}
	keptItems := userKeys(t, s, kept)
	keptObjects := s.Keys(t, "users/"+kept+"/")

	// Refused or ignored: nothing is deleted.
	if code, body := clerkDelivery(t, s, "whsec_"+base64.StdEncoding.EncodeToString([]byte("not-the-endpoint-secret-at-all")), "msg_forged", time.Now(), clerkEvent("user.deleted", gone)); code != http.StatusUnauthorized {
		t.Errorf("forged: %d %s", code, body)
	}
	if code, body := clerkDelivery(t, s, secret, "msg_stale", time.Now().Add(-10*time.Minute), clerkEvent("user.deleted", gone)); code != http.StatusUnauthorized {
		t.Errorf("stale: %d %s", code, body)
	}
	if code, body := clerkDelivery(t, s, secret, "msg_created", time.Now(), clerkEvent("user.created", gone)); code != http.StatusOK || !strings.Contains(body, "ignored") {
		t.Errorf("user.created: %d %s", code, body)
	}
	if got := s.Keys(t, "users/"+gone+"/"); len(got) == 0 {
		t.Fatal("a refused delivery deleted objects")
	}

	mark := s.Output.Mark()
	if code, body := clerkDelivery(t, s, secret, "msg_deleted", time.Now(), clerkEvent("user.deleted", gone)); code != http.StatusAccepted {
		t.Fatalf("user.deleted: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*coldStart)
	defer cancel()
	audit, err := s.Output.AwaitAfter(ctx, mark, func(l testkit.Line) bool {
		return l.Source == s.Name("EraseFunction") && l.Msg == "admin delete-user"
	})
	if err != nil {
		t.Fatalf("no audit line of the erase: %v", err)
	}
	if audit.Str("result") != "ok" || !strings.Contains(audit.Str("caller"), ":assumed-role/sandgate-local-EraseRole/") {
		t.Fatalf("the erase's audit line: %v", audit.Fields)
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

	// Svix delivers the same message again (its answer was lost): acknowledged, no action.
	if code, body := clerkDelivery(t, s, secret, "msg_deleted", time.Now(), clerkEvent("user.deleted", gone)); code != http.StatusOK || !strings.Contains(body, "duplicate") {
		t.Errorf("the same message again: %d %s", code, body)
	}
	if got := userKeys(t, s, kept); !slices.Equal(got, keptItems) {
		t.Errorf("the other user's items: %v, were %v", got, keptItems)
	}
	if got := s.Keys(t, "users/"+kept+"/"); !slices.Equal(got, keptObjects) {
		t.Errorf("the other user's objects: %v, were %v", got, keptObjects)
	}
	clients[kept].Note("after the deletion", reply)
	s.ExactCapacity(t, 1)
}
