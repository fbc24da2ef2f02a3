package s3local_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/s3local"
)

// backends runs fn against the memory and the on-disk (bbolt) backend.
func backends(t *testing.T, fn func(t *testing.T, srv *s3local.Server, c *s3.Client)) {
	for _, name := range []string{"memory", "bolt"} {
		t.Run(name, func(t *testing.T) {
			cfg := s3local.Config{}
			if name == "bolt" {
				cfg.Dir = t.TempDir()
			}
			srv := start(t, cfg)
			fn(t, srv, client(t, srv.URL(), 1))
		})
	}
}

// wantCode fails the test unless err is S3's error code with HTTP status.
func wantCode(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var ae smithy.APIError
	var re *awshttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("%s: %v, want %s (%d)", what, err, code, status)
	}
}

func putIf(c *s3.Client, bucket, key, body string, set func(*s3.PutObjectInput)) (string, error) {
	in := &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}
	set(in)
	out, err := c.PutObject(context.Background(), in)
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

func ifNoneMatch(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") }

func ifMatch(etag string) func(*s3.PutObjectInput) {
	return func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) }
}

func head(t *testing.T, c *s3.Client, bucket, key string) string {
	t.Helper()
	out, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("head %s: %v", key, err)
	}
	return aws.ToString(out.ETag)
}

// If-None-Match: * writes only a new key; If-Match writes only over the named ETag.
// Refused, nothing changes.
func TestConditions_PutObject(t *testing.T) {
	backends(t, func(t *testing.T, srv *s3local.Server, c *s3.Client) {
		b := srv.Bucket()
		first, err := putIf(c, b, "k", "first", ifNoneMatch)
		if err != nil {
			t.Fatalf("If-None-Match on a new key: %v", err)
		}
		_, err = putIf(c, b, "k", "second", ifNoneMatch)
		wantCode(t, "If-None-Match on an existing key", err, "PreconditionFailed", 412)

		_, err = putIf(c, b, "absent", "x", ifMatch(first))
		wantCode(t, "If-Match on a missing key", err, "PreconditionFailed", 412)
		_, err = putIf(c, b, "k", "x", ifMatch(`"0123456789abcdef0123456789abcdef"`))
		wantCode(t, "If-Match with another ETag", err, "PreconditionFailed", 412)
		if got := get(t, c, b, "k"); got != "first" {
			t.Fatalf("after refusals: %q", got)
		}

		second, err := putIf(c, b, "k", "second", ifMatch(first))
		if err != nil || second == first {
			t.Fatalf("If-Match with the current ETag: %q, %v", second, err)
		}
		_, err = putIf(c, b, "k", "third", ifMatch(first))
		wantCode(t, "If-Match with the replaced ETag", err, "PreconditionFailed", 412)
		// The ETag unquoted is the same condition.
		if _, err := putIf(c, b, "k", "third", ifMatch(strings.Trim(second, `"`))); err != nil {
			t.Fatalf("If-Match unquoted: %v", err)
		}
		if got := get(t, c, b, "k"); got != "third" {
			t.Fatalf("got %q", got)
		}
		// S3 accepts only "*" in If-None-Match.
		_, err = putIf(c, b, "k", "x", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String(second) })
		wantCode(t, "If-None-Match with an ETag", err, "NotImplemented", 501)
		if _, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &b, Key: aws.String("absent")}); err == nil {
			t.Fatal("a refused write created its key")
		}
	})
}

// multipart uploads body to key as one part and completes it with set applied.
func multipart(c *s3.Client, bucket, key, body string, set func(*s3.CompleteMultipartUploadInput)) error {
	ctx := context.Background()
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return err
	}
	part, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(1),
		Body: strings.NewReader(body), ContentLength: aws.Int64(int64(len(body)))})
	if err != nil {
		return err
	}
	in := &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: part.ETag, PartNumber: aws.Int32(1)}}}}
	set(in)
	_, err = c.CompleteMultipartUpload(ctx, in)
	return err
}

// CompleteMultipartUpload honours If-None-Match: * and If-Match as PutObject does.
func TestConditions_CompleteMultipartUpload(t *testing.T) {
	backends(t, func(t *testing.T, srv *s3local.Server, c *s3.Client) {
		b := srv.Bucket()
		none := func(in *s3.CompleteMultipartUploadInput) { in.IfNoneMatch = aws.String("*") }
		match := func(etag string) func(*s3.CompleteMultipartUploadInput) {
			return func(in *s3.CompleteMultipartUploadInput) { in.IfMatch = aws.String(etag) }
		}
		if err := multipart(c, b, "m", "one", none); err != nil {
			t.Fatalf("If-None-Match on a new key: %v", err)
		}
		wantCode(t, "If-None-Match on an existing key", multipart(c, b, "m", "two", none), "PreconditionFailed", 412)
		wantCode(t, "If-Match with another ETag", multipart(c, b, "m", "two", match(`"0123456789abcdef0123456789abcdef"`)), "PreconditionFailed", 412)
		wantCode(t, "If-Match on a missing key", multipart(c, b, "absent", "two", match(head(t, c, b, "m"))), "PreconditionFailed", 412)
		if got := get(t, c, b, "m"); got != "one" {
			t.Fatalf("after refusals: %q", got)
		}
		if err := multipart(c, b, "m", "two", match(head(t, c, b, "m"))); err != nil {
			t.Fatalf("If-Match with the current ETag: %v", err)
		}
		if got := get(t, c, b, "m"); got != "two" {
			t.Fatalf("got %q", got)
		}
		wantCode(t, "If-None-Match with an ETag", multipart(c, b, "m", "x", func(in *s3.CompleteMultipartUploadInput) {
			in.IfNoneMatch = aws.String(head(t, c, b, "m"))
		}), "NotImplemented", 501)
	})
}

// CopyObject's destination is held to If-None-Match and If-Match as well.
func TestConditions_CopyObject(t *testing.T) {
	backends(t, func(t *testing.T, srv *s3local.Server, c *s3.Client) {
		b := srv.Bucket()
		for k, v := range map[string]string{"src": "source", "dst": "destination"} {
			if err := put(t, c, b, k, v); err != nil {
				t.Fatal(err)
			}
		}
		cp := func(set func(*s3.CopyObjectInput)) error {
			in := &s3.CopyObjectInput{Bucket: &b, Key: aws.String("dst"), CopySource: aws.String(b + "/src")}
			set(in)
			_, err := c.CopyObject(context.Background(), in)
			return err
		}
		wantCode(t, "copy If-None-Match over an object", cp(func(in *s3.CopyObjectInput) { in.IfNoneMatch = aws.String("*") }), "PreconditionFailed", 412)
		wantCode(t, "copy If-Match another ETag", cp(func(in *s3.CopyObjectInput) { in.IfMatch = aws.String(head(t, c, b, "src")) }), "PreconditionFailed", 412)
		if got := get(t, c, b, "dst"); got != "destination" {
			t.Fatalf("after refusals: %q", got)
		}
		if err := cp(func(in *s3.CopyObjectInput) { in.IfMatch = aws.String(head(t, c, b, "dst")) }); err != nil {
			t.Fatalf("copy If-Match the destination's ETag: %v", err)
		}
		if got := get(t, c, b, "dst"); got != "source" {
			t.Fatalf("got %q", got)
		}
	})
}

// Conditional deletes are refused, not carried out unconditionally.
func TestConditions_Delete_NotImplemented(t *testing.T) {
	srv := start(t, s3local.Config{})
	c := client(t, srv.URL(), 1)
	b := srv.Bucket()
	if err := put(t, c, b, "k", "v"); err != nil {
		t.Fatal(err)
	}
	etag := head(t, c, b, "k")
	_, err := c.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &b, Key: aws.String("k"), IfMatch: aws.String(etag)})
	wantCode(t, "DeleteObject If-Match", err, "NotImplemented", 501)
	_, err = c.DeleteObjects(context.Background(), &s3.DeleteObjectsInput{Bucket: &b, Delete: &types.Delete{
		Objects: []types.ObjectIdentifier{{Key: aws.String("k"), ETag: aws.String(etag)}}}})
	wantCode(t, "DeleteObjects with an ETag", err, "NotImplemented", 501)
	if got := get(t, c, b, "k"); got != "v" {
		t.Fatalf("got %q", got)
	}
	if _, err := c.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &b, Key: aws.String("k")}); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
}

// Racing conditional writes of one key — PUTs and multipart completions alike — have
// exactly one winner, and the key holds the winner's bytes.
func TestConditions_Concurrent_OneWinner(t *testing.T) {
	backends(t, func(t *testing.T, srv *s3local.Server, c *s3.Client) {
		b := srv.Bucket()
		race := func(t *testing.T, key, round string, put func(i int) error) {
			t.Helper()
			const n = 24
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				winners []int
			)
			for i := range n {
				wg.Go(func() {
					err := put(i)
					var ae smithy.APIError
					switch {
					case err == nil:
						mu.Lock()
						winners = append(winners, i)
						mu.Unlock()
					case errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed":
					default:
						t.Errorf("writer %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			if len(winners) != 1 {
				t.Fatalf("%s: %d winners %v, want exactly one", key, len(winners), winners)
			}
			if got, want := get(t, c, b, key), fmt.Sprintf("%s writer %d", round, winners[0]); got != want {
				t.Fatalf("%s holds %q, the winner wrote %q", key, got, want)
			}
		}
		// Each round writes bodies of its own: a write of the same bytes keeps the ETag.
		body := func(i int) string { return fmt.Sprintf("first writer %d", i) }
		race(t, "new", "first", func(i int) error {
			if i%2 == 0 {
				return multipart(c, b, "new", body(i), func(in *s3.CompleteMultipartUploadInput) { in.IfNoneMatch = aws.String("*") })
			}
			_, err := putIf(c, b, "new", body(i), ifNoneMatch)
			return err
		})
		etag := head(t, c, b, "new")
		body = func(i int) string { return fmt.Sprintf("second writer %d", i) }
		race(t, "new", "second", func(i int) error {
			if i%2 == 0 {
				return multipart(c, b, "new", body(i), func(in *s3.CompleteMultipartUploadInput) { in.IfMatch = aws.String(etag) })
			}
			_, err := putIf(c, b, "new", body(i), ifMatch(etag))
			return err
		})
	})
}
