package s3local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	bolt "go.etcd.io/bbolt"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// Defaults for Config.
const (
	// DefaultAddr binds a free port on loopback only.
	DefaultAddr = "127.0.0.1:0"
	// DefaultBucket is the bucket created when Config.Bucket is empty.
	DefaultBucket = "sandgate-local"
	// DBFile is the bbolt file inside Config.Dir.
	DBFile = "s3.db"
	// DefaultShutdownTimeout bounds how long Close waits for requests in flight.
	DefaultShutdownTimeout = 5 * time.Second
)

// lockTimeout bounds the wait for another process's lock on the database.
const lockTimeout = 2 * time.Second

// Config says where and how to serve.
type Config struct {
	// Addr is host:port to listen on (DefaultAddr when empty).
	Addr string
	// Bucket is created on start when missing (DefaultBucket when empty).
	Bucket string
	// Dir persists objects in Dir/DBFile; empty keeps them in memory.
	Dir string
	// Seed fixes which requests fractional faults hit.
	Seed uint64
	// Log receives server errors and the gate's refusals (slog.Default when nil).
	Log *slog.Logger

	// Authority, when set, makes every request carry a valid SigV4 signature (service
	// s3, in the Authorization header or a presigned query) of credentials it issued;
	// others are refused as S3 refuses them (AccessDenied for unsigned requests — the
	// bucket has no public policy —, InvalidAccessKeyId, SignatureDoesNotMatch,
	// InvalidToken, ExpiredToken, RequestTimeTooSkewed, AuthorizationHeaderMalformed).
	// Nil checks nothing (unit tests of other packages).
	Authority *identity.Authority
	// Authorizer, with Authority, decides every request as derived by iampolicy.S3
	// (CopyObject: s3:PutObject on the target and s3:GetObject on the source;
	// DeleteObjects: s3:DeleteObject per key), refusing with AccessDenied; a GetObject
	// or HeadObject of a missing key answers 404 NoSuchKey only when the caller may
	// also s3:ListBucket (iampolicy.S3MissingKey), 403 AccessDenied otherwise. Nil
	// allows every verified caller.
	Authorizer identity.Authorizer

	// R2, when set, makes the endpoint answer as Cloudflare R2 does — an API token's
	// credentials and temporary credentials derived from it, no IAM (see R2Config) —
	// instead of as S3; Authority must then be nil.
	R2 *R2Config
}

// Server is a running S3 endpoint.
type Server struct {
	// Faults injects errors and latency into requests; empty until a test adds some.
	Faults *Faults

	url    string
	bucket string
	srv    *http.Server
	db     *bolt.DB
	served chan struct{}
	once   sync.Once
	err    error

	mu    sync.Mutex
	fresh map[net.Conn]bool // connections that have not sent a request yet
}

// Start serves a new endpoint and returns once it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "s3local")

	var (
		backend gofakes3.Backend
		db      *bolt.DB
	)
	if cfg.Dir == "" {
		backend = s3mem.New()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("start s3: create data dir: %w", err)
		}
		var err error
		db, err = bolt.Open(filepath.Join(cfg.Dir, DBFile), 0o600, &bolt.Options{Timeout: lockTimeout})
		if err != nil {
			return nil, fmt.Errorf("start s3: open %s (in use by another process?): %w", filepath.Join(cfg.Dir, DBFile), err)
		}
		backend = boltCopy{s3bolt.New(db)}
	}
	fail := func(err error) (*Server, error) {
		if db != nil {
			db.Close()
		}
		return nil, err
	}
	exists, err := backend.BucketExists(cfg.Bucket)
	if err != nil {
		return fail(fmt.Errorf("start s3: check bucket: %w", err))
	}
	if !exists {
		if err := backend.CreateBucket(cfg.Bucket); err != nil {
			return fail(fmt.Errorf("start s3: create bucket %q: %w", cfg.Bucket, err))
		}
	}
	fake := gofakes3.New(backend, gofakes3.WithLogger(errorLogger{log}), gofakes3.WithAutoBucket(false))
	var handler http.Handler = &conditions{backend: backend, next: fake.Server()}
	switch {
	case cfg.R2 != nil && cfg.Authority != nil:
		return fail(errors.New("start s3: R2 mode and an IAM authority exclude each other"))
	case cfg.R2 != nil:
		if cfg.R2.AccountID == "" || cfg.R2.AccessKeyID == "" || cfg.R2.SecretAccessKey == "" {
			return fail(errors.New("start s3: R2 mode needs the account ID and the parent token's access key ID and secret"))
		}
		handler = &r2gate{cfg: *cfg.R2, next: handler, log: log}
	}
	if cfg.Authority != nil {
		handler = &gate{authority: cfg.Authority, authorizer: cfg.Authorizer, backend: backend, next: handler, log: log}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fail(fmt.Errorf("start s3: listen on %s: %w", cfg.Addr, err))
	}
	s := &Server{
		Faults: NewFaults(handler, cfg.Seed),
		url:    "http://" + ln.Addr().String(),
		bucket: cfg.Bucket,
		db:     db,
		served: make(chan struct{}),
		fresh:  map[net.Conn]bool{},
	}
	s.srv = &http.Server{
		Handler:           s.Faults,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         s.track,
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("s3 server stopped", logging.Error, err.Error())
		}
	}()
	return s, nil
}

// URL is the endpoint's base URL, for AWS_ENDPOINT_URL_S3 or awsconf.Loopback.
func (s *Server) URL() string { return s.url }

// Bucket is the bucket created on start.
func (s *Server) Bucket() string { return s.bucket }

// Handler is the S3 handler — fault injection, then the identity and policy gate when
// Config.Authority is set, then gofakes3 — for serving it elsewhere as well (for
// example over TLS with httptest in a test).
func (s *Server) Handler() http.Handler { return s.Faults }

// Close stops serving, waiting up to DefaultShutdownTimeout for requests in flight,
// and closes the database. It may be called more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.Faults.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- s.srv.Shutdown(ctx) }()
		// Shutdown waits 5 s for connections that never sent a request (the HTTP
		// client dials spares); nothing is in flight on those, so close them now.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case err := <-shut:
				if err != nil {
					s.srv.Close()
				}
				break wait
			case <-tick.C:
				s.closeFresh()
			}
		}
		<-s.served
		if s.db != nil {
			if err := s.db.Close(); err != nil {
				s.err = fmt.Errorf("close s3 database: %w", err)
			}
		}
	})
	return s.err
}

// track remembers which connections have not sent a request yet.
func (s *Server) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateNew {
		s.fresh[c] = true
	} else {
		delete(s.fresh, c)
	}
}

func (s *Server) closeFresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.fresh {
		c.Close()
		delete(s.fresh, c)
	}
}

// errorLogger passes gofakes3's error lines to slog and drops its chatter.
type errorLogger struct{ log *slog.Logger }

func (l errorLogger) Print(level gofakes3.LogLevel, v ...any) {
	if level == gofakes3.LogErr {
		l.log.Warn("gofakes3", "detail", fmt.Sprint(v...))
	}
}
