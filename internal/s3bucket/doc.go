// Package s3bucket implements objsync.Bucket with aws-sdk-go-v2's S3 client, for AWS
// S3, Cloudflare R2 and other S3-compatible stores (region "auto", path-style
// addressing, request checksums only when an operation requires them).
package s3bucket
