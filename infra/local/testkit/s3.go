package testkit

import (
	"context"
	"testing"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// S3 is s3local serving one test.
type S3 struct {
	Server *s3local.Server
	tb     testing.TB
}

// StartS3 starts s3local with cfg; it is closed when the test ends.
func StartS3(tb testing.TB, cfg s3local.Config) *S3 {
	tb.Helper()
	srv, err := s3local.Start(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return &S3{Server: srv, tb: tb}
}

// Bucket returns a client of the server's bucket through the production client stack,
// built with o.
func (s *S3) Bucket(o s3bucket.Options) *s3bucket.Bucket {
	s.tb.Helper()
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(s.Server.URL())...)
	if err != nil {
		s.tb.Fatal(err)
	}
	return s3bucket.New(s3bucket.NewClient(cfg, o), s.Server.Bucket())
}
