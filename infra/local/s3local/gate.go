package s3local

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

// MaxPostBytes bounds the XML body of a POST (DeleteObjects, CompleteMultipartUpload)
// the gate reads to verify and authorise it.
const MaxPostBytes = 16 << 20

// Log keys of the gate's refusal lines.
const (
	LogReason      = "reason"
	LogAccessKeyID = "accessKeyId"
	LogPrincipal   = "principal"
	LogMethod      = "method"
	LogPath        = "path"
	LogError       = "error"
)

// gate checks every request before gofakes3 serves it: with an Authority, a valid
// SigV4 signature for s3 (in the Authorization header or a presigned query); with an
// Authorizer too, every action the request asks (iampolicy.S3) allowed, and for a
// GetObject or HeadObject of a missing key s3:ListBucket as well (iampolicy.S3MissingKey):
// 404 NoSuchKey when it is allowed, 403 AccessDenied when not, as S3 answers. Refusals
// are S3's XML errors (no body on HEAD).
type gate struct {
	authority  *identity.Authority
	authorizer identity.Authorizer
	backend    gofakes3.Backend
	next       http.Handler
	log        *slog.Logger
}

// s3Error is a refusal in S3's shape.
type s3Error struct {
	status int
	code   string
	msg    string
	// Optional elements S3 adds for some codes.
	accessKeyID                string
	requestTime, serverTime    string
	maxSkewMillis              string
	expires                    string
	clientSHA256, serverSHA256 string
	condition                  string // PreconditionFailed: the header that did not hold
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	presigned := r.URL.Query().Has("X-Amz-Signature") || r.URL.Query().Has("X-Amz-Credential")
	authz := r.Header.Get("Authorization")
	switch {
	case authz != "" && !strings.HasPrefix(authz, identity.Algorithm+" "):
		g.refuse(w, r, "", &s3Error{status: http.StatusBadRequest, code: "InvalidRequest",
			msg: "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."})
		return
	case authz != "" && r.Header.Get("X-Amz-Content-Sha256") == "":
		g.refuse(w, r, "", &s3Error{status: http.StatusBadRequest, code: "InvalidRequest",
			msg: "Missing required header for this request: x-amz-content-sha256"})
		return
	}

	payload := r.Header.Get("X-Amz-Content-Sha256")
	hexPayload := isSHA256Hex(payload)
	var body []byte // a POST's XML body, read here; object bodies stream through
	if r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, MaxPostBytes+1))
		r.Body.Close()
		if err != nil {
			g.refuse(w, r, "", &s3Error{status: http.StatusBadRequest, code: "IncompleteBody", msg: "You did not provide the number of bytes specified by the Content-Length HTTP header."})
			return
		}
		if len(b) > MaxPostBytes {
			g.refuse(w, r, "", &s3Error{status: http.StatusBadRequest, code: "MaxMessageLengthExceeded", msg: "Your request was too big."})
			return
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}

	// The payload hash header stands for the body in the signature (a POST's body
	// when it names no hash); the body is checked against it below.
	verifyBody := []byte(nil)
	if !presigned && payload == "" {
		verifyBody = body
	}
	p, err := g.authority.Verify(r, identity.S3, verifyBody)
	if err != nil {
		var ae *identity.AuthError
		key := ""
		if errors.As(err, &ae) {
			key = ae.AccessKeyID
		}
		g.refuse(w, r, key, g.authError(err, r, presigned))
		return
	}

	var checks []func(status int) *s3Error
	if hexPayload && !presigned {
		if body != nil {
			if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != payload {
				g.refuse(w, r, "", contentMismatch(payload, hex.EncodeToString(sum[:])))
				return
			}
		} else if r.Body != nil && r.Body != http.NoBody {
			cb := &checkedBody{rc: r.Body, h: sha256.New(), want: payload}
			r.Body = cb
			checks = append(checks, cb.check)
		}
	}

	if g.authorizer != nil {
		env := iampolicy.Env{Region: g.authority.Region, Account: g.authority.Account}
		call := iampolicy.CallOf(r, body)
		reqs, err := iampolicy.S3(env, call)
		if err != nil {
			g.refuse(w, r, "", g.decisionError(err, p, r))
			return
		}
		if isDeleteObjects(r) {
			g.deleteObjects(w, r, p, reqs, body)
			return
		}
		if err := iampolicy.AuthorizeAll(r.Context(), g.authorizer, p, reqs); err != nil {
			g.refuse(w, r, "", g.decisionError(err, p, r))
			return
		}
		if bucket, key, ok := getObject(r, reqs); ok {
			checks = append(checks, g.missingKey(r, p, env, call, bucket, key))
		}
	}

	if len(checks) > 0 {
		iw := &interceptWriter{ResponseWriter: w, r: r, checks: checks}
		g.next.ServeHTTP(iw, r)
		iw.finish()
		return
	}
	g.next.ServeHTTP(w, r)
}

// isDeleteObjects reports a DeleteObjects call: POST /<bucket>?delete.
func isDeleteObjects(r *http.Request) bool {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return r.Method == http.MethodPost && r.URL.Query().Has("delete") && bucket != "" && key == ""
}

// deleteObjects serves a DeleteObjects call as S3 does: s3:DeleteObject is decided
// key by key (reqs[i] is the i-th object of body); the allowed keys are deleted and
// each refused one is reported in the answer's DeleteResult as an AccessDenied
// <Error>, with HTTP 200. Keys are never deleted unless allowed.
func (g *gate) deleteObjects(w http.ResponseWriter, r *http.Request, p *identity.Principal, reqs []identity.Request, body []byte) {
	var in gofakes3.DeleteRequest
	if err := xml.Unmarshal(body, &in); err != nil || len(in.Objects) != len(reqs) {
		g.refuse(w, r, "", &s3Error{status: http.StatusBadRequest, code: "MalformedXML",
			msg: "The XML you provided was not well-formed or did not validate against our published schema"})
		return
	}
	var allowed []gofakes3.ObjectID
	var denied []gofakes3.ErrorResult
	for i, req := range reqs {
		req.Principal = p
		err := g.authorizer.Authorize(r.Context(), req)
		var de *identity.DeniedError
		switch {
		case err == nil:
			allowed = append(allowed, in.Objects[i])
		case errors.As(err, &de):
			denied = append(denied, gofakes3.ErrorResult{Key: in.Objects[i].Key, Code: gofakes3.ErrorCode("AccessDenied"), Message: "Access Denied"})
		case errors.Is(err, identity.ErrUnsupported):
			denied = append(denied, gofakes3.ErrorResult{Key: in.Objects[i].Key, Code: gofakes3.ErrorCode("AccessDenied"), Message: err.Error()})
		default:
			g.refuse(w, r, "", g.decisionError(err, p, r))
			return
		}
	}
	if len(denied) == 0 {
		g.next.ServeHTTP(w, r)
		return
	}
	bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if exists, err := g.backend.BucketExists(bucket); err != nil || !exists {
		// gofakes3 answers NoSuchBucket (or its own trouble) before deleting anything.
		g.next.ServeHTTP(w, r)
		return
	}
	out := gofakes3.MultiDeleteResult{}
	if len(allowed) > 0 {
		// gofakes3 deletes the allowed keys; its answer gets the refused ones added.
		sub, err := xml.Marshal(gofakes3.DeleteRequest{Objects: allowed, Quiet: in.Quiet})
		if err != nil {
			g.refuse(w, r, "", &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."})
			return
		}
		r2 := r.Clone(r.Context())
		r2.Body, r2.ContentLength = io.NopCloser(bytes.NewReader(sub)), int64(len(sub))
		r2.Header.Set("Content-Length", fmt.Sprint(len(sub)))
		for k := range r2.Header {
			if k == "Content-Md5" || strings.HasPrefix(k, "X-Amz-Checksum-") || k == "X-Amz-Sdk-Checksum-Algorithm" {
				r2.Header.Del(k)
			}
		}
		rec := &recorder{header: http.Header{}}
		g.next.ServeHTTP(rec, r2)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if rec.status != http.StatusOK {
			rec.replay(w)
			return
		}
		if err := xml.Unmarshal(rec.body.Bytes(), &out); err != nil {
			g.refuse(w, r, "", &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."})
			return
		}
	}
	out.Error = append(out.Error, denied...)
	b, _ := xml.Marshal(out)
	b = append([]byte(xml.Header), b...)
	id, host := requestIDs()
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", fmt.Sprint(len(b)))
	h.Set("X-Amz-Request-Id", id)
	h.Set("X-Amz-Id-2", host)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// recorder keeps an answer of gofakes3 to add to it before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}

// getObject reports a GetObject or HeadObject (of the current version) and its key.
func getObject(r *http.Request, reqs []identity.Request) (bucket, key string, ok bool) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || len(reqs) != 1 || reqs[0].Action != "s3:GetObject" {
		return "", "", false
	}
	_, res, found := strings.Cut(reqs[0].Resource, ":s3:::")
	if !found {
		return "", "", false
	}
	bucket, key, ok = strings.Cut(res, "/")
	return bucket, key, ok && key != ""
}

// missingKey returns the check of a GetObject's answer: a 404 for a missing key (not
// a missing bucket) stands only when p may also list the bucket; otherwise S3 answers
// 403 AccessDenied, so a caller cannot learn which keys exist.
func (g *gate) missingKey(r *http.Request, p *identity.Principal, env iampolicy.Env, call iampolicy.Call, bucket, key string) func(int) *s3Error {
	return func(status int) *s3Error {
		if status != http.StatusNotFound {
			return nil
		}
		if exists, err := g.backend.BucketExists(bucket); err != nil || !exists {
			return nil // NoSuchBucket, or the backend's own trouble: gofakes3's answer stands
		}
		req := iampolicy.S3MissingKey(env, call, bucket, key)
		req.Principal = p
		if err := g.authorizer.Authorize(r.Context(), req); err != nil {
			return g.decisionError(err, p, r)
		}
		return nil
	}
}

// authError maps a refused signature to S3's answer.
func (g *gate) authError(err error, r *http.Request, presigned bool) *s3Error {
	detail := err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) {
		detail = ae.Detail
	}
	now := g.authority.Now
	if now == nil {
		now = time.Now
	}
	serverTime := now().UTC().Format(time.RFC3339)
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return &s3Error{status: http.StatusForbidden, code: "AccessDenied", msg: "Access Denied"}
	case errors.Is(err, identity.ErrUnknownKey):
		return &s3Error{status: http.StatusForbidden, code: "InvalidAccessKeyId",
			msg: "The AWS Access Key Id you provided does not exist in our records.", accessKeyID: ae.AccessKeyID}
	case errors.Is(err, identity.ErrBadToken):
		return &s3Error{status: http.StatusBadRequest, code: "InvalidToken", msg: "The provided token is malformed or otherwise invalid."}
	case errors.Is(err, identity.ErrExpired):
		return &s3Error{status: http.StatusBadRequest, code: "ExpiredToken", msg: "The provided token has expired."}
	case errors.Is(err, identity.ErrBadSignature):
		return &s3Error{status: http.StatusForbidden, code: "SignatureDoesNotMatch",
			msg: "The request signature we calculated does not match the signature you provided. Check your key and signing method.", accessKeyID: ae.AccessKeyID}
	case errors.Is(err, identity.ErrSkewed) && presigned:
		return &s3Error{status: http.StatusForbidden, code: "AccessDenied", msg: "Request has expired", serverTime: serverTime,
			expires: presignedExpiry(r)}
	case errors.Is(err, identity.ErrSkewed):
		return &s3Error{status: http.StatusForbidden, code: "RequestTimeTooSkewed",
			msg: "The difference between the request time and the current time is too large.", requestTime: r.Header.Get("X-Amz-Date"),
			serverTime: serverTime, maxSkewMillis: fmt.Sprint(identity.S3MaxSkew.Milliseconds())}
	case presigned: // ErrMalformed, ErrScope
		return &s3Error{status: http.StatusBadRequest, code: "AuthorizationQueryParametersError", msg: detail}
	default:
		return &s3Error{status: http.StatusBadRequest, code: "AuthorizationHeaderMalformed", msg: "The authorization header is malformed; " + detail}
	}
}

// presignedExpiry is when a presigned request expired (X-Amz-Date + X-Amz-Expires).
func presignedExpiry(r *http.Request) string {
	q := r.URL.Query()
	t, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return ""
	}
	d, err := time.ParseDuration(q.Get("X-Amz-Expires") + "s")
	if err != nil {
		return ""
	}
	return t.Add(d).UTC().Format(time.RFC3339)
}

// decisionError maps the outcome of authorisation to S3's answer: AccessDenied in
// S3's words for a denial or an undecidable request, an argument error for a request
// the derivation cannot read, InternalError when the evaluator could not answer.
func (g *gate) decisionError(err error, p *identity.Principal, r *http.Request) *s3Error {
	var de *identity.DeniedError
	switch {
	case errors.As(err, &de):
		why := "because no identity-based policy allows the " + de.Action + " action"
		if de.Explicit {
			why = "with an explicit deny in an identity-based policy"
		}
		return &s3Error{status: http.StatusForbidden, code: "AccessDenied",
			msg: fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %q %s", de.Principal, de.Action, de.Resource, why)}
	case errors.Is(err, identity.ErrUnsupported):
		g.log.Info("s3 request refused", LogReason, "unsupported", LogPrincipal, p.ARN, LogMethod, r.Method, LogPath, r.URL.Path, LogError, err.Error())
		return &s3Error{status: http.StatusForbidden, code: "AccessDenied", msg: err.Error()}
	case errors.Is(err, iampolicy.ErrMalformed) && r.Method == http.MethodPost:
		return &s3Error{status: http.StatusBadRequest, code: "MalformedXML",
			msg: "The XML you provided was not well-formed or did not validate against our published schema"}
	case errors.Is(err, iampolicy.ErrMalformed):
		return &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", msg: err.Error()}
	default:
		// The evaluator could not decide: refused, never passed on.
		g.log.Warn("s3 authorization failed", LogPrincipal, p.ARN, LogMethod, r.Method, LogPath, r.URL.Path, LogError, err.Error())
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."}
	}
}

func contentMismatch(client, computed string) *s3Error {
	return &s3Error{status: http.StatusBadRequest, code: "XAmzContentSHA256Mismatch",
		msg:          "The provided 'x-amz-content-sha256' header does not match what was computed.",
		clientSHA256: client, serverSHA256: computed}
}

func (g *gate) refuse(w http.ResponseWriter, r *http.Request, accessKeyID string, e *s3Error) {
	if e.status != http.StatusForbidden || e.code != "AccessDenied" || accessKeyID != "" {
		g.log.Info("s3 request refused", LogReason, e.code, LogAccessKeyID, accessKeyID, LogMethod, r.Method, LogPath, r.URL.Path)
	}
	writeError(w, r, e)
}

// errorBody is S3's XML error document.
type errorBody struct {
	XMLName                     xml.Name `xml:"Error"`
	Code                        string
	Message                     string
	AWSAccessKeyID              string `xml:"AWSAccessKeyId,omitempty"`
	RequestTime                 string `xml:",omitempty"`
	ServerTime                  string `xml:",omitempty"`
	MaxAllowedSkewMilliseconds  string `xml:",omitempty"`
	Expires                     string `xml:",omitempty"`
	ClientComputedContentSHA256 string `xml:",omitempty"`
	S3ComputedContentSHA256     string `xml:",omitempty"`
	Condition                   string `xml:",omitempty"`
	RequestID                   string `xml:"RequestId"`
	HostID                      string `xml:"HostId"`
}

// writeError answers e as S3 does: an XML error document with a request id (none on
// HEAD, whose answers have no body), and the ids in x-amz-request-id and x-amz-id-2.
func writeError(w http.ResponseWriter, r *http.Request, e *s3Error) {
	id, host := requestIDs()
	h := w.Header()
	h.Set("X-Amz-Request-Id", id)
	h.Set("X-Amz-Id-2", host)
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	b, _ := xml.Marshal(errorBody{Code: e.code, Message: e.msg, AWSAccessKeyID: e.accessKeyID, RequestTime: e.requestTime,
		ServerTime: e.serverTime, MaxAllowedSkewMilliseconds: e.maxSkewMillis, Expires: e.expires,
		ClientComputedContentSHA256: e.clientSHA256, S3ComputedContentSHA256: e.serverSHA256, Condition: e.condition,
		RequestID: id, HostID: host})
	b = append([]byte(xml.Header), b...)
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// requestIDs returns an S3-style request id (16 hex digits, upper case) and host id.
func requestIDs() (string, string) {
	b := make([]byte, 8+48)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b[:8])), base64.StdEncoding.EncodeToString(b[8:])
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// errContentMismatch ends the read of a body whose hash is not the signed one, so
// gofakes3 stores nothing.
var errContentMismatch = errors.New("x-amz-content-sha256 does not match the body")

// checkedBody hashes a streamed body and fails its last read when the hash is not
// the one the request signed (X-Amz-Content-Sha256).
type checkedBody struct {
	rc   io.ReadCloser
	h    hash.Hash
	want string
	got  string
	bad  atomic.Bool
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF {
		if b.got = hex.EncodeToString(b.h.Sum(nil)); b.got != b.want {
			b.bad.Store(true)
			return n, errContentMismatch
		}
	}
	return n, err
}

func (b *checkedBody) Close() error { return b.rc.Close() }

// check replaces gofakes3's answer (an error about the failed read) once the body
// turned out not to be the signed one.
func (b *checkedBody) check(int) *s3Error {
	if b.bad.Load() {
		return contentMismatch(b.want, b.got)
	}
	return nil
}

// interceptWriter lets checks replace gofakes3's answer when its status is known,
// before anything of it is sent.
type interceptWriter struct {
	http.ResponseWriter
	r        *http.Request
	checks   []func(status int) *s3Error
	wrote    bool
	replaced bool
}

func (w *interceptWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	for _, c := range w.checks {
		if e := c(status); e != nil {
			w.replaced = true
			h := w.ResponseWriter.Header()
			for k := range h {
				delete(h, k)
			}
			writeError(w.ResponseWriter, w.r, e)
			return
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *interceptWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// finish sends the status of an answer that wrote nothing (an empty 200).
func (w *interceptWriter) finish() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
}
