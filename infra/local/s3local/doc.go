// Package s3local is the local stack's S3 endpoint: gofakes3 served over real HTTP on
// loopback, in memory or persisted on disk (bbolt), with switchable fault injection
// (errors and latency) for tests and the fault harness.
package s3local
