package iampolicy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

const (
	account = "123456789012"
	region  = "eu-west-1"
)

var env = iampolicy.Env{Region: region, Account: account}

// shared is one Evaluator for the tests that only ask questions (no stats, no logs).
var shared struct {
	once sync.Once
	e    *iampolicy.Evaluator
	err  error
}

func sharedEvaluator(t *testing.T) *iampolicy.Evaluator {
	t.Helper()
	shared.once.Do(func() {
		root, err := iampolicy.RepoRoot()
		if err != nil {
			shared.err = err
			return
		}
		shared.e, shared.err = iampolicy.Start(context.Background(), root+"/"+iampolicy.ScriptPath,
			root+"/"+iampolicy.NodeModulesPath, iampolicy.Options{Logger: slog.New(slog.DiscardHandler)})
	})
	if shared.err != nil {
		t.Fatalf("policy evaluator: %v", shared.err)
	}
	return shared.e
}

// doc builds a policy document from statements written as Go maps.
func doc(statements ...map[string]any) json.RawMessage {
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": statements})
	if err != nil {
		panic(err)
	}
	return b
}

// stackAuthority is an Authority of the test account.
func stackAuthority() *identity.Authority {
	return identity.New(account, region)
}

// session adds a role with policies (named <role>/p1, <role>/p2 …) and trust, and
// issues a session of it with tags and an optional session policy.
func session(t *testing.T, a *identity.Authority, roleName string, trust json.RawMessage, tags map[string]string, sessionPolicy json.RawMessage, policies ...json.RawMessage) *identity.Principal {
	t.Helper()
	role, ok := a.Role(a.RoleARN(roleName))
	if !ok {
		var ps []identity.Policy
		for i, p := range policies {
			ps = append(ps, identity.Policy{Name: fmt.Sprintf("%s/p%d", roleName, i+1), Document: p})
		}
		var err error
		if role, err = a.AddRole(identity.Role{Name: roleName, Trust: trust, Policies: ps}); err != nil {
			t.Fatal(err)
		}
	}
	_, p, err := a.Issue(identity.SessionSpec{RoleARN: role.ARN, SessionName: "s-" + roleName, Tags: tags, Policy: sessionPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// capture is an endpoint that records each request as an iampolicy.Call and answers
// 200 with an empty body of the right kind; the SDK may fail to read it, which the
// derivation tests ignore: they look at the request.
type capture struct {
	srv   *httptest.Server
	calls chan iampolicy.Call
}

func newCapture(t *testing.T) *capture {
	t.Helper()
	c := &capture{calls: make(chan iampolicy.Call, 64)}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u := *r.URL
		c.calls <- iampolicy.Call{Method: r.Method, URL: &u, Header: r.Header.Clone(), Body: body, TLS: r.TLS != nil}
		switch {
		case strings.Contains(r.Header.Get("Content-Type"), "json"):
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.Write([]byte("{}"))
		case r.Method == http.MethodHead:
		default:
			w.Header().Set("Content-Type", "application/xml")
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// config points an SDK client at the capture, without retries.
func (c *capture) config() aws.Config {
	return aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		BaseEndpoint: aws.String(c.srv.URL),
		Retryer:      func() aws.Retryer { return aws.NopRetryer{} },
	}
}

// next returns the request the last call made.
func (c *capture) next(t *testing.T) iampolicy.Call {
	t.Helper()
	select {
	case call := <-c.calls:
		return call
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the capture endpoint")
		return iampolicy.Call{}
	}
}

// globalKeys are left out of render: every request carries them.
var globalKeys = map[string]bool{
	"aws:RequestedRegion": true, "aws:SecureTransport": true, "s3:signatureversion": true,
	"s3:authType": true, "s3:x-amz-content-sha256": true, "s3:ResourceAccount": true, "ec2:Region": true,
}

// render writes a request as "action resource key=v1|v2 …" (keys sorted, global
// keys left out).
func render(r identity.Request) string {
	var keys []string
	for k := range r.Context {
		if !globalKeys[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := []string{r.Action, r.Resource}
	for _, k := range keys {
		parts = append(parts, k+"="+strings.Join(r.Context[k], "|"))
	}
	return strings.Join(parts, " ")
}

// principalKeys are added by identity.PrincipalContext, not by a derivation.
var principalKeys = map[string]bool{"aws:RoleSessionName": true, "aws:PrincipalTagKeys": true}

// checkDerived compares reqs with want, then asks iam-simulate about each one under
// an allow-everything policy: it must understand the action and ARN (no validation
// error) and keep every context key the derivation set (none ignored as
// inapplicable), and the stack must list each key as supplied.
func checkDerived(t *testing.T, reqs []identity.Request, want ...string) {
	t.Helper()
	got := make([]string, len(reqs))
	for i, r := range reqs {
		got[i] = render(r)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("derived:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e := sharedEvaluator(t)
	p := allowAll(t)
	for _, r := range reqs {
		r.Principal = p
		d, err := e.Decide(context.Background(), r)
		if err != nil {
			t.Fatalf("%s: iam-simulate: %v", render(r), err)
		}
		if !d.Allowed() {
			t.Errorf("%s: %s under an allow-all policy", render(r), d.Result)
		}
		for _, k := range d.IgnoredContextKeys {
			if !principalKeys[k] {
				t.Errorf("%s: iam-simulate ignored context key %s (not one the action supports)", render(r), k)
			}
		}
		for k := range r.Context {
			if !iampolicy.Supplied(k) {
				t.Errorf("%s: key %s is derived but not in SuppliedKeys", render(r), k)
			}
		}
	}
}

var allowAllOnce struct {
	once sync.Once
	p    *identity.Principal
	err  error
}

func allowAll(t *testing.T) *identity.Principal {
	t.Helper()
	allowAllOnce.once.Do(func() {
		a := stackAuthority()
		role, err := a.AddRole(identity.Role{Name: "AllowAll", Policies: []identity.Policy{{Name: "AllowAll/all",
			Document: doc(map[string]any{"Effect": "Allow", "Action": "*", "Resource": "*"})}}})
		if err != nil {
			allowAllOnce.err = err
			return
		}
		_, allowAllOnce.p, allowAllOnce.err = a.Issue(identity.SessionSpec{RoleARN: role.ARN, SessionName: "all"})
	})
	if allowAllOnce.err != nil {
		t.Fatal(allowAllOnce.err)
	}
	return allowAllOnce.p
}
