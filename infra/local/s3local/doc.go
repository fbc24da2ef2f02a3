// Package s3local is the local stack's S3 endpoint: gofakes3 served over real HTTP on
// loopback, in memory or persisted on disk (bbolt), with S3's conditional writes
// (If-Match, If-None-Match: * on PutObject, CopyObject and CompleteMultipartUpload,
// checked atomically per key), switchable fault injection (errors and latency) for
// tests and the fault harness and, given an
// identity.Authority and an identity.Authorizer, every caller's signature verified and
// every request authorised as IAM would, refusals answered in S3's own XML.
package s3local
