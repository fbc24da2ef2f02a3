package s3local_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sandgate/sandgate/infra/local/s3local"
)

// A server-side copy on the on-disk backend whose write grows the database (so bbolt
// remaps its file) keeps the stack alive and copies the bytes, the ETag, and the
// metadata the copy replaces: gofakes3's own CopyObject faults there (see boltcopy.go).
func TestCopyObject_GrowingDatabase(t *testing.T) {
	backends(t, func(t *testing.T, srv *s3local.Server, c *s3.Client) {
		ctx := context.Background()
		b := srv.Bucket()
		body := make([]byte, 4<<20)
		if _, err := rand.Read(body); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &b, Key: aws.String("src"), Body: bytes.NewReader(body),
			ContentLength: aws.Int64(int64(len(body)))}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			dst := "copy" + string(rune('a'+i))
			out, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &b, Key: &dst, CopySource: aws.String(b + "/src"),
				MetadataDirective: types.MetadataDirectiveReplace, Metadata: map[string]string{"sha256": "x"}})
			if err != nil {
				t.Fatalf("copy %d: %v", i, err)
			}
			got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &b, Key: &dst})
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(got.Body)
			got.Body.Close()
			if !bytes.Equal(data, body) || aws.ToString(got.ETag) != aws.ToString(out.CopyObjectResult.ETag) || got.Metadata["sha256"] != "x" {
				t.Fatalf("copy %d: %d bytes, ETag %s (copy said %s), meta %v", i, len(data), aws.ToString(got.ETag), aws.ToString(out.CopyObjectResult.ETag), got.Metadata)
			}
		}
	})
}
