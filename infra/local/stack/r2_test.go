package stack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/launcher"
)

// In R2 mode the stack is deployed with the template's R2 parameters: the parent key
// in Secrets Manager (the shape the template and the vendor read), the functions and
// the task definition switched by the template's own conditions, the R2 endpoint
// reached at the local server; the bucket answers the parent key only, and the
// operator's AWS key is unknown to it, as to R2.
func TestStart_R2Mode(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	// A stand-in agent that waits, and ends on SIGTERM (as PID 1 of its task it must
	// handle the signal itself).
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\ntrap 'exit 0' TERM\n"+sleep+" 60 &\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Agent: agent, R2: true,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if s.R2 == nil || s.R2.AccountID != stack.R2AccountID || s.R2.Endpoint != stack.R2Endpoint() {
		t.Fatalf("parent %+v", s.R2)
	}

	// The secret, as the template's dynamic references and the vendor read it.
	vend := s.Template.Functions["VendFunction"].Environment
	arn := vend["STORAGE_CREDENTIALS_SECRET"]
	raw, ok := s.Secrets().Current(arn)
	var key struct{ AccessKeyID, SecretAccessKey string }
	if !ok || json.Unmarshal([]byte(raw), &key) != nil || key.AccessKeyID != s.R2.AccessKeyID || key.SecretAccessKey != s.R2.SecretAccessKey {
		t.Fatalf("secret %q: found %v, want the parent key as JSON accessKeyId/secretAccessKey", arn, ok)
	}
	if !strings.HasPrefix(arn, "arn:aws:secretsmanager:") || vend["STORAGE_ENDPOINT"] != stack.R2Endpoint() || vend["BUCKET"] != s.Bucket {
		t.Errorf("the vendor's storage: %q %q %q", arn, vend["STORAGE_ENDPOINT"], vend["BUCKET"])
	}
	if cleanup := s.Template.Functions["CleanupFunction"].Environment; cleanup["AWS_ENDPOINT_URL_S3"] != stack.R2Endpoint() || cleanup["STORAGE_REGION"] != stack.R2Region {
		t.Errorf("cleanup's storage is not R2: endpoint %q, region %q", cleanup["AWS_ENDPOINT_URL_S3"], cleanup["STORAGE_REGION"])
	}
	// The parent key lives in the secret only: the functions that need it read it.
	for id, f := range s.Template.Functions {
		for k, v := range f.Environment {
			if strings.Contains(v, s.R2.SecretAccessKey) {
				t.Errorf("%s's environment holds the parent secret key in %s", id, k)
			}
		}
	}

	// A task: the R2 endpoint dialed at the local server, region auto, no storage key.
	ecsc := ecs.NewFromConfig(s.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
	l := launcher.New(ecsc, launcher.Config{Cluster: s.Cluster, TaskDefinition: s.TaskDefinition, Container: "agent",
		Subnets: []string{"subnet-0local"}, Table: s.Table, Bucket: s.Bucket}, slog.New(slog.DiscardHandler))
	if _, err := l.Launch(ctx, launcher.Spec{UserID: "user_a", LeaseToken: "0123456789abcdef0123456789abcdef", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	var env []string
	for deadline := time.Now().Add(10 * time.Second); env == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if tasks := s.ECS.Tasks(); len(tasks) == 1 {
			env = tasks[0].Environment
		}
	}
	if env == nil {
		t.Fatal("the task never started")
	}
	for _, want := range []string{"AWS_ENDPOINT_URL_S3=" + s.S3.URL(), "STORAGE_REGION=auto"} {
		if !slices.Contains(env, want) {
			t.Errorf("task environment lacks %s:\n%s", want, strings.Join(env, "\n"))
		}
	}
	for _, kv := range env {
		if strings.Contains(kv, s.R2.SecretAccessKey) || strings.Contains(kv, s.R2.AccessKeyID) || strings.HasPrefix(kv, "STORAGE_ACCESS_KEY_ID=") {
			t.Errorf("the task's environment holds the parent key: %s", strings.SplitN(kv, "=", 2)[0])
		}
	}

	// The operator's client signs with the parent key; the operator's AWS key is unknown.
	if _, err := s.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("users/user_a/x"),
		Body: strings.NewReader("x")}); err != nil {
		t.Fatalf("the parent key's put: %v", err)
	}
	aws3 := s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
		o.Region = stack.R2Region
	})
	_, err = aws3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("users/user_a/x")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "Unauthorized" {
		t.Fatalf("the operator's AWS key at the R2 endpoint: %v, want Unauthorized", err)
	}
}
