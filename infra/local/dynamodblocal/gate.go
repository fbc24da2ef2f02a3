package dynamodblocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

// MaxRequestBytes bounds a request body the front reads to verify and authorise it
// (DynamoDB's largest requests, BatchWriteItem and TransactWriteItems, stay under 16 MB).
const MaxRequestBytes = 16 << 20

// Error types DynamoDB answers refusals with (JSON 1.0 "__type").
const (
	typeMissingToken    = "com.amazon.coral.service#MissingAuthenticationTokenException"
	typeUnrecognized    = "com.amazon.coral.service#UnrecognizedClientException"
	typeBadSignature    = "com.amazon.coral.service#InvalidSignatureException"
	typeIncomplete      = "com.amazon.coral.service#IncompleteSignatureException"
	typeExpiredToken    = "com.amazon.coral.service#ExpiredTokenException"
	typeAccessDenied    = "com.amazon.coral.service#AccessDeniedException"
	typeUnknownOp       = "com.amazon.coral.service#UnknownOperationException"
	typeValidation      = "com.amazon.coral.validate#ValidationException"
	typeNotFound        = "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
	typeInternal        = "com.amazonaws.dynamodb.v20120810#InternalServerError"
	typeSerialization   = "com.amazon.coral.service#SerializationException"
	typeRequestTooLarge = "com.amazon.coral.service#RequestEntityTooLargeException"
)

// Log keys of the front's refusal lines.
const (
	LogReason      = "reason"
	LogAccessKeyID = "accessKeyId"
	LogPrincipal   = "principal"
	LogOperation   = "operation"
	LogError       = "error"
)

// gate is the front's identity and policy check: with an Authority, every request
// must carry a valid SigV4 signature for dynamodb; with an Authorizer too, every
// action the request asks (iampolicy.DynamoDB) must be allowed. Only then does the
// request go on, unchanged, to DynamoDB Local; every refusal is answered as DynamoDB
// answers it. A nil gate lets everything through.
type gate struct {
	authority  *identity.Authority
	authorizer identity.Authorizer
	schemas    *schemaCache
	log        *slog.Logger
}

// apiError is a refusal in DynamoDB's shape.
type apiError struct {
	status int
	typ    string
	msg    string
}

// wrap checks r, then serves it with next or answers the refusal.
func (g *gate) wrap(next http.Handler) http.Handler {
	if g == nil || g.authority == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op, body, refused := g.check(r)
		if refused != nil {
			writeError(w, refused)
			return
		}
		next.ServeHTTP(w, r)
		// A table created, deleted or changed (an index added) may have another
		// key schema now: look it up again on next use.
		switch op {
		case "CreateTable", "DeleteTable", "UpdateTable":
			g.schemas.forgetTableOf(body)
		}
	})
}

// check verifies and authorises r and returns its operation and body; on success
// r.Body holds the same bytes again.
func (g *gate) check(r *http.Request) (string, []byte, *apiError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	r.Body.Close()
	if err != nil {
		return "", nil, &apiError{http.StatusBadRequest, typeSerialization, "could not read the request body"}
	}
	if len(body) > MaxRequestBytes {
		return "", nil, &apiError{http.StatusRequestEntityTooLarge, typeRequestTooLarge, "Request size exceeds " + strconv.Itoa(MaxRequestBytes) + " bytes"}
	}
	op, refused := g.decide(r, body)
	return op, body, refused
}

// decide verifies and authorises r, whose payload is body.
func (g *gate) decide(r *http.Request, body []byte) (string, *apiError) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	op, _ := strings.CutPrefix(r.Header.Get("X-Amz-Target"), iampolicy.DynamoDBTargetPrefix)

	p, err := g.authority.Verify(r, identity.DynamoDB, body)
	if err != nil {
		e := authError(err)
		var ae *identity.AuthError
		key := ""
		if errors.As(err, &ae) {
			key = ae.AccessKeyID
		}
		g.log.Info("dynamodb request refused", LogReason, e.typ, LogAccessKeyID, key, LogOperation, op)
		return op, e
	}
	if !strings.HasPrefix(r.Header.Get("X-Amz-Target"), iampolicy.DynamoDBTargetPrefix) || op == "" {
		return op, &apiError{http.StatusBadRequest, typeUnknownOp, "Unknown operation"}
	}
	if g.authorizer == nil {
		return op, nil
	}
	lookup := g.schemas.forRequest(r.Context())
	env := iampolicy.Env{Region: g.authority.Region, Account: g.authority.Account}
	reqs, err := iampolicy.DynamoDB(env, iampolicy.CallOf(r, body), lookup.schema)
	if err == nil {
		err = iampolicy.AuthorizeAll(r.Context(), g.authorizer, p, reqs)
	}
	if err == nil {
		return op, nil
	}
	var de *identity.DeniedError
	switch {
	case lookup.err != nil:
		g.log.Warn("dynamodb key schema lookup failed", LogOperation, op, LogError, lookup.err.Error())
		return op, &apiError{http.StatusInternalServerError, typeInternal, "Internal server error"}
	case errors.As(err, &de):
		// The evaluator has logged the denial with the statement that would allow it.
		return op, &apiError{http.StatusBadRequest, typeAccessDenied, de.Error()}
	case errors.Is(err, identity.ErrUnsupported):
		g.log.Info("dynamodb request refused", LogReason, "unsupported", LogPrincipal, p.ARN, LogOperation, op, LogError, err.Error())
		return op, &apiError{http.StatusBadRequest, typeAccessDenied, err.Error()}
	case errors.Is(err, iampolicy.ErrMalformed) && lookup.missing:
		// A keyed call on a table that does not exist: nothing to authorise against
		// its key schema, and nothing to read or write either.
		return op, &apiError{http.StatusBadRequest, typeNotFound, "Requested resource not found"}
	case errors.Is(err, iampolicy.ErrMalformed):
		return op, &apiError{http.StatusBadRequest, typeValidation, err.Error()}
	default:
		// The evaluator could not decide (closed, crashed twice, the caller gone):
		// refused, never passed on.
		g.log.Warn("dynamodb authorization failed", LogPrincipal, p.ARN, LogOperation, op, LogError, err.Error())
		return op, &apiError{http.StatusInternalServerError, typeInternal, "Internal server error"}
	}
}

// authError maps a refused signature to DynamoDB's answer.
func authError(err error) *apiError {
	msg := err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) && ae.Detail != "" {
		msg = ae.Detail
	}
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return &apiError{http.StatusBadRequest, typeMissingToken, "Request is missing Authentication Token"}
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return &apiError{http.StatusBadRequest, typeUnrecognized, "The security token included in the request is invalid."}
	case errors.Is(err, identity.ErrExpired):
		return &apiError{http.StatusBadRequest, typeExpiredToken, "The security token included in the request is expired"}
	case errors.Is(err, identity.ErrMalformed):
		return &apiError{http.StatusBadRequest, typeIncomplete, msg}
	case errors.Is(err, identity.ErrBadSignature):
		return &apiError{http.StatusBadRequest, typeBadSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	default: // ErrSkewed ("Signature expired: …"), ErrScope ("Credential should be scoped …")
		return &apiError{http.StatusBadRequest, typeBadSignature, msg}
	}
}

// writeError answers e as DynamoDB does: JSON 1.0 with __type and message, a request
// id, and the body's CRC32 in X-Amz-Crc32 as on every DynamoDB response.
func writeError(w http.ResponseWriter, e *apiError) {
	field := "message"
	if e.typ == typeAccessDenied {
		field = "Message" // DynamoDB capitalises it on AccessDeniedException
	}
	b, _ := json.Marshal(map[string]string{"__type": e.typ, field: e.msg})
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.0")
	h.Set("X-Amzn-Requestid", requestID())
	h.Set(crc32Header, strconv.FormatUint(uint64(crc32.ChecksumIEEE(b)), 10))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// requestID is a DynamoDB-style request id: 52 characters of [0-9A-Z].
func requestID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
	b := make([]byte, 52)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// schemaCache holds the key schema of each table the front has authorised a keyed
// call on, read with DescribeTable from the emulator itself once per table (again
// after a CreateTable, DeleteTable or UpdateTable through the front).
type schemaCache struct {
	mu     sync.Mutex
	client *dynamodb.Client // of the bare emulator; replaced on each start
	tables map[string]iampolicy.DynamoDBTable
}

func newSchemaCache() *schemaCache {
	return &schemaCache{tables: map[string]iampolicy.DynamoDBTable{}}
}

// setClient points the cache at a (re)started emulator and forgets every schema: an
// in-memory emulator comes back without its tables.
func (c *schemaCache) setClient(cl *dynamodb.Client) {
	c.mu.Lock()
	c.client = cl
	c.tables = map[string]iampolicy.DynamoDBTable{}
	c.mu.Unlock()
}

func (c *schemaCache) forget(table string) {
	c.mu.Lock()
	delete(c.tables, table)
	c.mu.Unlock()
}

// forgetTableOf forgets the table a table-level call's body names.
func (c *schemaCache) forgetTableOf(body []byte) {
	var in struct{ TableName string }
	if json.Unmarshal(body, &in) == nil && in.TableName != "" {
		name := in.TableName
		if i := strings.Index(name, ":table/"); strings.HasPrefix(name, "arn:") && i >= 0 {
			name, _, _ = strings.Cut(name[i+len(":table/"):], "/")
		}
		c.forget(name)
	}
}

// lookup is one request's use of the cache: it remembers a table that does not exist
// and a lookup that failed, which the derivation's DynamoDBSchema cannot report.
type lookup struct {
	ctx     context.Context
	cache   *schemaCache
	missing bool
	err     error
}

func (c *schemaCache) forRequest(ctx context.Context) *lookup {
	return &lookup{ctx: ctx, cache: c}
}

func (l *lookup) schema(table string) (iampolicy.DynamoDBTable, bool) {
	c := l.cache
	c.mu.Lock()
	t, ok := c.tables[table]
	cl := c.client
	c.mu.Unlock()
	if ok {
		return t, true
	}
	if cl == nil {
		l.err = errors.New("dynamodb local is not running")
		return t, false
	}
	out, err := cl.DescribeTable(l.ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	var nf *types.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		l.missing = true
		return t, false
	case err != nil:
		l.err = err
		return t, false
	}
	t = tableSchema(out.Table)
	c.mu.Lock()
	c.tables[table] = t
	c.mu.Unlock()
	return t, true
}

// tableSchema is what the derivation needs of a table: its partition key's name and
// each index's.
func tableSchema(d *types.TableDescription) iampolicy.DynamoDBTable {
	hash := func(ks []types.KeySchemaElement) string {
		for _, k := range ks {
			if k.KeyType == types.KeyTypeHash {
				return aws.ToString(k.AttributeName)
			}
		}
		return ""
	}
	t := iampolicy.DynamoDBTable{HashKey: hash(d.KeySchema), IndexHashKeys: map[string]string{}}
	for _, ix := range d.GlobalSecondaryIndexes {
		t.IndexHashKeys[aws.ToString(ix.IndexName)] = hash(ix.KeySchema)
	}
	for _, ix := range d.LocalSecondaryIndexes {
		t.IndexHashKeys[aws.ToString(ix.IndexName)] = hash(ix.KeySchema)
	}
	return t
}
