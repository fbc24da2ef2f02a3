package iampolicy_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

// recorderRole has four statements: Read and ReadWrite overlap on GetItem, Delete is
// never used, and the trust policy's one statement is used by Lambda.
func recorderRole(t *testing.T, a *identity.Authority) *identity.Role {
	t.Helper()
	role, err := a.AddRole(identity.Role{Name: "Worker",
		Trust: doc(map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}),
		Policies: []identity.Policy{{Name: "Worker/worker", Document: doc(
			map[string]any{"Sid": "Read", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": tableARN},
			map[string]any{"Sid": "ReadWrite", "Effect": "Allow", "Action": []string{"dynamodb:GetItem", "dynamodb:PutItem"}, "Resource": tableARN},
			map[string]any{"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": tableARN},
		)}}})
	if err != nil {
		t.Fatal(err)
	}
	return role
}

func uses(t *testing.T, r *iampolicy.Recorder) map[string]iampolicy.StatementUse {
	t.Helper()
	out := map[string]iampolicy.StatementUse{}
	for _, u := range r.Report() {
		out[u.Statement.String()] = u
	}
	return out
}

func TestRecorder_OnlyAllowingStatementIsNeeded(t *testing.T) {
	rec := iampolicy.NewRecorder()
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.DiscardHandler), Recorder: rec})
	a := stackAuthority()
	role := recorderRole(t, a)
	if err := rec.Register(role); err != nil {
		t.Fatal(err)
	}
	_, p, err := a.Issue(identity.SessionSpec{RoleARN: role.ARN, SessionName: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, action := range []string{"dynamodb:GetItem", "dynamodb:GetItem", "dynamodb:PutItem"} {
		if err := e.Authorize(ctx, identity.Request{Principal: p, Action: action, Resource: tableARN}); err != nil {
			t.Fatal(err)
		}
	}
	// A denied request records nothing.
	_ = e.Authorize(ctx, identity.Request{Principal: p, Action: "dynamodb:Scan", Resource: tableARN})
	if err := e.Trust(ctx, iampolicy.TrustRequest{Role: role, Service: iampolicy.LambdaService}); err != nil {
		t.Fatal(err)
	}

	got := uses(t, rec)
	if len(got) != 4 {
		t.Fatalf("report has %d statements, want 4: %v", len(got), got)
	}
	for name, want := range map[string]struct {
		allowed, alone int
	}{
		"Worker/worker#Read":                {allowed: 2, alone: 0}, // ReadWrite allows its GetItems too
		"Worker/worker#ReadWrite":           {allowed: 3, alone: 1}, // PutItem needs it
		"Worker/worker#3":                   {allowed: 0, alone: 0},
		"Worker/AssumeRolePolicyDocument#1": {allowed: 1, alone: 1},
	} {
		u, ok := got[name]
		if !ok {
			t.Errorf("%s missing from the report", name)
			continue
		}
		if u.Allowed != want.allowed || u.Alone != want.alone || u.Needed() != (want.alone > 0) {
			t.Errorf("%s: allowed %d alone %d needed %v, want %d %d", name, u.Allowed, u.Alone, u.Needed(), want.allowed, want.alone)
		}
	}
	if ex := got["Worker/worker#ReadWrite"].Example; ex != "dynamodb:PutItem on "+tableARN+" by Worker" {
		t.Errorf("example = %q", ex)
	}
}

func TestRecorder_MergesFilesOfSeveralProcesses(t *testing.T) {
	dir := t.TempDir()
	read := iampolicy.StatementRef{PolicyType: iampolicy.IdentityPolicy, Policy: "Worker/worker", Statement: "Read"}
	rw := iampolicy.StatementRef{PolicyType: iampolicy.IdentityPolicy, Policy: "Worker/worker", Statement: "ReadWrite"}
	del := iampolicy.StatementRef{PolicyType: iampolicy.IdentityPolicy, Policy: "Worker/worker", Statement: "3"}

	// Two test processes: one saw only GetItems (both statements allow them), the
	// other a DeleteItem and a PutItem.
	first := iampolicy.NewRecorder()
	first.Add(iampolicy.Record{Principal: "Worker", Action: "dynamodb:GetItem", Resource: tableARN, Allowing: []iampolicy.StatementRef{rw, read}, Count: 3})
	second := iampolicy.NewRecorder()
	second.Add(iampolicy.Record{Principal: "Worker", Action: "dynamodb:GetItem", Resource: tableARN, Allowing: []iampolicy.StatementRef{read, rw}})
	second.Add(iampolicy.Record{Principal: "Worker", Action: "dynamodb:DeleteItem", Resource: tableARN, Allowing: []iampolicy.StatementRef{del}})
	p1, err := first.SaveDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := second.SaveDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p1 == p2 || filepath.Dir(p1) != dir {
		t.Fatalf("files %s and %s", p1, p2)
	}

	merged := iampolicy.NewRecorder()
	if err := merged.Register(recorderRole(t, stackAuthority())); err != nil {
		t.Fatal(err)
	}
	if err := merged.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	recs := merged.Records()
	if len(recs) != 2 {
		t.Fatalf("%d merged records, want 2 (identical GetItems merge): %+v", len(recs), recs)
	}
	got := uses(t, merged)
	if u := got["Worker/worker#Read"]; u.Allowed != 4 || u.Needed() {
		t.Errorf("Read: %+v, want allowed 4, not needed", u)
	}
	if u := got["Worker/worker#3"]; u.Alone != 1 || !u.Needed() {
		t.Errorf("statement 3: %+v, want needed by one DeleteItem", u)
	}
	if u := got["Worker/AssumeRolePolicyDocument#1"]; u.Allowed != 0 || u.Needed() {
		t.Errorf("trust: %+v, want unused", u)
	}

	// WriteTo and ReadFrom round-trip.
	var buf bytes.Buffer
	if _, err := merged.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	again := iampolicy.NewRecorder()
	if _, err := again.ReadFrom(&buf); err != nil {
		t.Fatal(err)
	}
	if a, b := again.Records(), merged.Records(); len(a) != len(b) || a[0].Count != b[0].Count || a[1].Count != b[1].Count {
		t.Errorf("round trip: %+v, want %+v", a, b)
	}
}

// Two stacks of one template deployed with other parameters (S3 and R2) register the
// same role, a condition having put a statement in the middle of one's policy: the
// report lists every statement either had, once, named by the first registration (a
// new statement whose position is taken is a variant), and a call counts for the
// statement that allowed it in its own stack, matched by content.
func TestRecorder_RegisterMergesAStackOfOtherParameters(t *testing.T) {
	read := map[string]any{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": tableARN}
	secret := map[string]any{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
	rec := iampolicy.NewRecorder()
	e := iampolicy.StartForTest(t, iampolicy.Options{Logger: slog.New(slog.DiscardHandler), Recorder: rec})
	ctx := context.Background()
	// Each stack has an account of its own.
	stackRole := func(statements ...map[string]any) (*identity.Authority, *identity.Role) {
		a := stackAuthority()
		r, err := a.AddRole(identity.Role{Name: "Vend", Policies: []identity.Policy{{Name: "Vend/vend", Document: doc(statements...)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Register(r); err != nil {
			t.Fatal(err)
		}
		return a, r
	}
	call := func(a *identity.Authority, r *identity.Role, action, resource string) {
		t.Helper()
		_, p, err := a.Issue(identity.SessionSpec{RoleARN: r.ARN, SessionName: "fn"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Authorize(ctx, identity.Request{Principal: p, Action: action, Resource: resource}); err != nil {
			t.Fatal(err)
		}
	}
	s3a, s3Role := stackRole(read)
	r2a, r2Role := stackRole(secret, read)
	stackRole(read) // a third stack like the first adds nothing

	call(r2a, r2Role, "dynamodb:GetItem", tableARN) // statement 2 of its policy
	got := uses(t, rec)
	if len(got) != 2 {
		t.Fatalf("report %v, want Vend/vend#1 and its variant", got)
	}
	if u := got["Vend/vend#1"]; u.Alone != 1 {
		t.Errorf("the R2 stack's GetItem was not counted for the read statement: %+v", u)
	}
	if u := got["Vend/vend#1 (variant 2)"]; u.Allowed != 0 {
		t.Errorf("the secret statement: %+v, want nothing allowed yet", u)
	}
	call(r2a, r2Role, "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:123456789012:secret:s-abcdef")
	call(s3a, s3Role, "dynamodb:GetItem", tableARN)
	got = uses(t, rec)
	if u := got["Vend/vend#1 (variant 2)"]; u.Alone != 1 || got["Vend/vend#1"].Alone != 2 {
		t.Errorf("report %v", got)
	}
}
