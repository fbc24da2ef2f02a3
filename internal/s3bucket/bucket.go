package s3bucket

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/internal/objsync"
)

// DefaultPageSize is how many keys a listing page asks for (S3's maximum).
const DefaultPageSize = 1000

// API is the part of the S3 client Bucket calls.
type API interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
	// The server-side copies and the look without a body (copy.go).
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	CopyObject(ctx context.Context, in *s3.CopyObjectInput, optFns ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput, optFns ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
}

var _ objsync.Bucket = (*Bucket)(nil)

// Bucket is one S3 or R2 bucket seen through objsync.Bucket.
type Bucket struct {
	// PageSize is how many keys one listing page asks for (DefaultPageSize when zero).
	PageSize int32
	// MultipartCopyThreshold is the size from which Copy copies in parts
	// (DefaultMultipartCopyThreshold when zero); CopyPartSize is each part's size
	// (DefaultCopyPartSize when zero).
	MultipartCopyThreshold, CopyPartSize int64

	client API
	name   string
}

// New returns the bucket name reached through client (see NewClient).
func New(client API, name string) *Bucket {
	return &Bucket{client: client, name: name}
}

// List returns one page of keys under prefix.
func (b *Bucket) List(ctx context.Context, prefix, token string) (objsync.Page, error) {
	size := b.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	in := &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix, MaxKeys: &size}
	if token != "" {
		in.ContinuationToken = &token
	}
	out, err := b.client.ListObjectsV2(ctx, in)
	if err != nil {
		return objsync.Page{}, fmt.Errorf("list %s: %w", prefix, translate(err))
	}
	page := objsync.Page{Objects: make([]objsync.ObjectInfo, 0, len(out.Contents))}
	for _, o := range out.Contents {
		page.Objects = append(page.Objects, objsync.ObjectInfo{
			Key:          aws.ToString(o.Key),
			Size:         aws.ToInt64(o.Size),
			ETag:         unquote(aws.ToString(o.ETag)),
			LastModified: aws.ToTime(o.LastModified),
		})
	}
	if aws.ToBool(out.IsTruncated) {
		page.Next = aws.ToString(out.NextContinuationToken)
		if page.Next == "" {
			return objsync.Page{}, fmt.Errorf("list %s: truncated page without a continuation token", prefix)
		}
	}
	return page, nil
}

// Get returns the object's description, with its user metadata, and its content.
func (b *Bucket) Get(ctx context.Context, key string) (objsync.ObjectInfo, io.ReadCloser, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return objsync.ObjectInfo{}, nil, fmt.Errorf("get %s: %w", key, translate(err))
	}
	return objectInfo(key, out.ContentLength, out.ETag, out.LastModified, out.Metadata), out.Body, nil
}

// objectInfo is the description GetObject and HeadObject answer: user metadata keys
// lower-cased, the ETag unquoted.
func objectInfo(key string, size *int64, etag *string, modified *time.Time, metadata map[string]string) objsync.ObjectInfo {
	meta := make(map[string]string, len(metadata))
	for k, v := range metadata {
		meta[strings.ToLower(k)] = v
	}
	return objsync.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(size),
		ETag:         unquote(aws.ToString(etag)),
		LastModified: aws.ToTime(modified),
		Meta:         meta,
	}
}

// Put writes the object. When in.SHA256 is set it signs the payload with it, so a
// plain-HTTP endpoint does not make the SDK read the body an extra time to hash it.
//
// in.IfMatch and in.IfNoneMatch become PutObject's If-Match (the ETag, quoted as RFC
// 7232 and S3's own ETag header write it) and If-None-Match: "*" (the only value S3
// accepts). S3 documents both on PutObject
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html#API_PutObject_RequestSyntax:
// 412 Precondition Failed when the condition does not hold, 409
// ConditionalRequestConflict when a conflicting operation occurs meanwhile), and so
// does R2 (https://developers.cloudflare.com/r2/api/s3/conditional-operations/; error
// 10031 PreconditionFailed, https://developers.cloudflare.com/r2/api/error-codes/).
// Both come back as objsync.ErrPrecondition.
func (b *Bucket) Put(ctx context.Context, in objsync.PutInput) (string, error) {
	var opts []func(*s3.Options)
	if len(in.SHA256) > 0 {
		opts = append(opts, withPayloadHash(hex.EncodeToString(in.SHA256)))
	}
	if in.IfMatch != "" && in.IfNoneMatch {
		return "", fmt.Errorf("put %s: both If-Match and If-None-Match", in.Key)
	}
	put := &s3.PutObjectInput{
		Bucket:        &b.name,
		Key:           &in.Key,
		Body:          in.Body,
		ContentLength: &in.Size,
		Metadata:      in.Meta,
	}
	if in.IfMatch != "" {
		put.IfMatch = aws.String(`"` + unquote(in.IfMatch) + `"`)
	}
	if in.IfNoneMatch {
		put.IfNoneMatch = aws.String("*")
	}
	out, err := b.client.PutObject(ctx, put, opts...)
	if err != nil {
		return "", fmt.Errorf("put %s: %w", in.Key, translate(err))
	}
	return unquote(aws.ToString(out.ETag)), nil
}

// Delete removes up to objsync.MaxDeleteBatch keys in one DeleteObjects call.
func (b *Bucket) Delete(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > objsync.MaxDeleteBatch {
		return fmt.Errorf("delete %d keys: at most %d per call", len(keys), objsync.MaxDeleteBatch)
	}
	ids := make([]types.ObjectIdentifier, len(keys))
	for i := range keys {
		ids[i] = types.ObjectIdentifier{Key: &keys[i]}
	}
	out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: &b.name,
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	}, withContentMD5)
	if err != nil {
		return fmt.Errorf("delete %d keys from %s: %w", len(keys), keys[0], translate(err))
	}
	if len(out.Errors) == 0 {
		return nil
	}
	pe := &objsync.PartialError{Op: "delete"}
	for _, e := range out.Errors {
		pe.Failures = append(pe.Failures, objsync.Failure{
			Name: aws.ToString(e.Key),
			Err:  codeError(aws.ToString(e.Code), aws.ToString(e.Message)),
		})
	}
	return pe
}

// translate maps the SDK's errors onto objsync's, keeping the store's code in the
// message; anything else passes through.
func translate(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if s := sentinel(ae.ErrorCode()); s != nil {
			return fmt.Errorf("%w (%s)", s, ae.ErrorCode())
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound: // HEAD-style answers carry no code
			return objsync.ErrNotFound
		case http.StatusForbidden, http.StatusUnauthorized:
			return objsync.ErrDenied
		case http.StatusPreconditionFailed:
			return objsync.ErrPrecondition
		}
	}
	return err
}

// sentinel returns objsync's error for an S3 error code, or nil.
func sentinel(code string) error {
	switch code {
	case "NoSuchKey", "NotFound":
		return objsync.ErrNotFound
	case "NoSuchBucket":
		return objsync.ErrNoBucket
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
		"InvalidToken", "ExpiredToken", "Unauthorized": // R2 answers 401 Unauthorized to bad or expired credentials
		return objsync.ErrDenied
	case "PreconditionFailed", "ConditionalRequestConflict":
		return objsync.ErrPrecondition
	}
	return nil
}

// codeError describes one key's failure inside a DeleteObjects answer.
func codeError(code, msg string) error {
	if s := sentinel(code); s != nil {
		return fmt.Errorf("%w (%s): %s", s, code, msg)
	}
	return fmt.Errorf("%s: %s", code, msg)
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
