package s3bucket

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sandgate/sandgate/internal/objsync"
)

// Defaults of the multipart copy. One CopyObject copies at most 5 GiB on S3 and R2;
// larger objects are copied in parts with UploadPartCopy, which both document
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html,
// https://developers.cloudflare.com/r2/api/s3/api/). Parts are at least 5 MiB
// (but the last) and at most 10,000.
const (
	DefaultMultipartCopyThreshold = 5 << 30
	DefaultCopyPartSize           = 512 << 20
	minCopyPartSize               = 5 << 20
	maxCopyParts                  = 10000
)

// Head returns an object's description with its user metadata, without its body.
func (b *Bucket) Head(ctx context.Context, key string) (objsync.ObjectInfo, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return objsync.ObjectInfo{}, fmt.Errorf("head %s: %w", key, translate(err))
	}
	return objectInfo(key, out.ContentLength, out.ETag, out.LastModified, out.Metadata), nil
}

// Copy copies in.Src to in.Dst inside the bucket, server-side: one CopyObject up to
// MultipartCopyThreshold, UploadPartCopy parts beyond. A source that is no longer
// in.SrcIfMatch is objsync.ErrPrecondition, nothing written.
func (b *Bucket) Copy(ctx context.Context, in objsync.CopyInput) error {
	threshold := b.MultipartCopyThreshold
	if threshold <= 0 {
		threshold = DefaultMultipartCopyThreshold
	}
	if in.Size > threshold {
		return b.copyParts(ctx, in)
	}
	cp := &s3.CopyObjectInput{Bucket: &b.name, Key: &in.Dst, CopySource: aws.String(b.copySource(in.Src))}
	if in.SrcIfMatch != "" {
		cp.CopySourceIfMatch = aws.String(`"` + unquote(in.SrcIfMatch) + `"`)
	}
	if in.Meta != nil {
		cp.MetadataDirective, cp.Metadata = types.MetadataDirectiveReplace, in.Meta
	}
	if _, err := b.client.CopyObject(ctx, cp); err != nil {
		return fmt.Errorf("copy %s to %s: %w", in.Src, in.Dst, translate(err))
	}
	return nil
}

// copyParts copies a large object in parts; a failure aborts the upload, so no
// part is left billed.
func (b *Bucket) copyParts(ctx context.Context, in objsync.CopyInput) (err error) {
	part := b.CopyPartSize
	if part <= 0 {
		part = DefaultCopyPartSize
	}
	part = max(part, minCopyPartSize, (in.Size+maxCopyParts-1)/maxCopyParts)
	meta := in.Meta
	if meta == nil { // CreateMultipartUpload takes no metadata from the source: carry it over
		src, err := b.Head(ctx, in.Src)
		if err != nil {
			return fmt.Errorf("copy %s to %s: %w", in.Src, in.Dst, err)
		}
		if in.SrcIfMatch != "" && src.ETag != unquote(in.SrcIfMatch) {
			return fmt.Errorf("copy %s to %s: %w", in.Src, in.Dst, objsync.ErrPrecondition)
		}
		meta = src.Meta
	}
	up, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b.name, Key: &in.Dst, Metadata: meta})
	if err != nil {
		return fmt.Errorf("copy %s to %s: start: %w", in.Src, in.Dst, translate(err))
	}
	defer func() {
		if err != nil {
			// A fresh context: the caller's may be what ended the copy.
			_, _ = b.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: &in.Dst, UploadId: up.UploadId})
		}
	}()
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < in.Size; off, n = off+part, n+1 {
		end := min(off+part, in.Size) - 1
		pc := &s3.UploadPartCopyInput{
			Bucket: &b.name, Key: &in.Dst, UploadId: up.UploadId, PartNumber: aws.Int32(n),
			CopySource:      aws.String(b.copySource(in.Src)),
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		}
		if in.SrcIfMatch != "" {
			pc.CopySourceIfMatch = aws.String(`"` + unquote(in.SrcIfMatch) + `"`)
		}
		out, err := b.client.UploadPartCopy(ctx, pc)
		if err != nil {
			return fmt.Errorf("copy %s to %s: part %d: %w", in.Src, in.Dst, n, translate(err))
		}
		if out.CopyPartResult == nil {
			return fmt.Errorf("copy %s to %s: part %d: no result", in.Src, in.Dst, n)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(n)})
	}
	if _, err := b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &b.name, Key: &in.Dst, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return fmt.Errorf("copy %s to %s: complete: %w", in.Src, in.Dst, translate(err))
	}
	return nil
}

// copySource is x-amz-copy-source for a key of this bucket: each segment escaped
// (a "+" too, which a store may read as a space), slashes kept.
func (b *Bucket) copySource(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(url.QueryEscape(p), "+", "%20")
	}
	return url.PathEscape(b.name) + "/" + strings.Join(parts, "/")
}
