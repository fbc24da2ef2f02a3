package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Algorithm is the only signing algorithm the stack accepts.
const Algorithm = "AWS4-HMAC-SHA256"

// Request times further than this from the stack's clock are refused, as AWS refuses
// them (S3 allows 15 minutes).
const (
	DefaultMaxSkew = 5 * time.Minute
	S3MaxSkew      = 15 * time.Minute
)

// Service describes how one emulated service checks signatures.
type Service struct {
	// Name is the signing name in the credential scope: dynamodb, s3, ecs, execute-api,
	// lambda, sts, secretsmanager, scheduler.
	Name string
	// SingleEscape: the canonical path is the path as sent, not escaped once more.
	// Only S3 signs this way.
	SingleEscape bool
	// MaxSkew bounds the request's time (DefaultMaxSkew when zero).
	MaxSkew time.Duration
}

// Service definitions of the emulated services.
var (
	DynamoDB       = Service{Name: "dynamodb"}
	S3             = Service{Name: "s3", SingleEscape: true, MaxSkew: S3MaxSkew}
	ECS            = Service{Name: "ecs"}
	ExecuteAPI     = Service{Name: "execute-api"}
	Lambda         = Service{Name: "lambda"}
	STS            = Service{Name: "sts"}
	SecretsManager = Service{Name: "secretsmanager"}
	Scheduler      = Service{Name: "scheduler"}
)

// Streaming payload hashes S3 accepts in X-Amz-Content-Sha256 (the chunks' own
// signatures are not checked).
var streamingPayloads = map[string]bool{
	"UNSIGNED-PAYLOAD":                                 true,
	"STREAMING-UNSIGNED-PAYLOAD-TRAILER":               true,
	"STREAMING-AWS4-HMAC-SHA256-PAYLOAD":               true,
	"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER":       true,
	"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD":         true,
	"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER": true,
}

// signature is what a request says about its own signature.
type signature struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signedList                         string
	sig                                string
	amzDate                            string
	token                              string
	presigned                          bool
	expires                            time.Duration
}

// Verify checks r's SigV4 signature for svc and returns who signed it. body is the
// request's payload, already read (nil when it is streamed, as S3 objects are: then
// X-Amz-Content-Sha256 stands for it). Errors are *AuthError.
func (a *Authority) Verify(r *http.Request, svc Service, body []byte) (*Principal, error) {
	s, err := parseSignature(r)
	if err != nil {
		return nil, err
	}
	if s.region != a.Region || s.service != svc.Name {
		return nil, &AuthError{Reason: ErrScope, AccessKeyID: s.accessKeyID,
			Detail: fmt.Sprintf("Credential should be scoped to a valid region and service: got %s/%s, want %s/%s", s.region, s.service, a.Region, svc.Name)}
	}
	t, err := time.Parse("20060102T150405Z", s.amzDate)
	if err != nil || !strings.HasPrefix(s.amzDate, s.date) {
		return nil, &AuthError{Reason: ErrMalformed, AccessKeyID: s.accessKeyID, Detail: "X-Amz-Date is missing, malformed or not the credential's date"}
	}
	now := a.now()
	if s.presigned {
		if now.After(t.Add(s.expires)) {
			return nil, &AuthError{Reason: ErrSkewed, AccessKeyID: s.accessKeyID, Detail: "Request has expired"}
		}
	} else {
		skew := svc.MaxSkew
		if skew == 0 {
			skew = DefaultMaxSkew
		}
		if d := now.Sub(t); d > skew || d < -skew {
			return nil, &AuthError{Reason: ErrSkewed, AccessKeyID: s.accessKeyID,
				Detail: fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s)", s.amzDate, now.Add(-skew).UTC().Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"), skew)}
		}
	}
	p, secret, err := a.Resolve(s.accessKeyID, s.token)
	if err != nil {
		return nil, err
	}
	payload, err := payloadHash(r, s, body)
	if err != nil {
		return nil, err
	}
	canonical := canonicalRequest(r, svc, s, payload)
	sum := sha256.Sum256([]byte(canonical))
	scope := s.date + "/" + s.region + "/" + s.service + "/aws4_request"
	toSign := Algorithm + "\n" + s.amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+secret), s.date)
	k = hmacSHA256(k, s.region)
	k = hmacSHA256(k, s.service)
	k = hmacSHA256(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(k, toSign))
	if !hmac.Equal([]byte(want), []byte(s.sig)) {
		return nil, &AuthError{Reason: ErrBadSignature, AccessKeyID: s.accessKeyID,
			Detail: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
	}
	return p, nil
}

// parseSignature reads the Authorization header, or a presigned query.
func parseSignature(r *http.Request) (*signature, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		alg, rest, _ := strings.Cut(h, " ")
		if alg != Algorithm {
			return nil, &AuthError{Reason: ErrMalformed, Detail: "Unsupported authorization type"}
		}
		params := map[string]string{}
		for _, part := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			params[k] = v
		}
		s := &signature{sig: params["Signature"], signedList: params["SignedHeaders"],
			amzDate: r.Header.Get("X-Amz-Date"), token: r.Header.Get("X-Amz-Security-Token")}
		if err := s.setCredential(params["Credential"]); err != nil {
			return nil, err
		}
		if s.amzDate == "" {
			s.amzDate = r.Header.Get("Date")
		}
		return s, s.setSignedHeaders()
	}
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") == "" && q.Get("X-Amz-Signature") == "" {
		return nil, &AuthError{Reason: ErrUnsigned, Detail: "Request is missing Authentication Token"}
	}
	if q.Get("X-Amz-Algorithm") != Algorithm {
		return nil, &AuthError{Reason: ErrMalformed, Detail: "Unsupported X-Amz-Algorithm"}
	}
	s := &signature{sig: q.Get("X-Amz-Signature"), signedList: q.Get("X-Amz-SignedHeaders"),
		amzDate: q.Get("X-Amz-Date"), token: q.Get("X-Amz-Security-Token"), presigned: true}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || secs > 604800 {
		return nil, &AuthError{Reason: ErrMalformed, Detail: "X-Amz-Expires must be 1 to 604800 seconds"}
	}
	s.expires = time.Duration(secs) * time.Second
	if err := s.setCredential(q.Get("X-Amz-Credential")); err != nil {
		return nil, err
	}
	return s, s.setSignedHeaders()
}

func (s *signature) setCredential(cred string) error {
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || scope[0] == "" {
		return &AuthError{Reason: ErrMalformed, Detail: "Authorization requires a Credential of the form <key>/<date>/<region>/<service>/aws4_request"}
	}
	s.accessKeyID, s.date, s.region, s.service = scope[0], scope[1], scope[2], scope[3]
	return nil
}

func (s *signature) setSignedHeaders() error {
	if s.sig == "" || s.signedList == "" {
		return &AuthError{Reason: ErrMalformed, AccessKeyID: s.accessKeyID, Detail: "Authorization requires Signature and SignedHeaders"}
	}
	s.signedHeaders = strings.Split(s.signedList, ";")
	hasHost := false
	for _, h := range s.signedHeaders {
		if h != strings.ToLower(h) {
			return &AuthError{Reason: ErrMalformed, AccessKeyID: s.accessKeyID, Detail: "SignedHeaders must be lower case"}
		}
		hasHost = hasHost || h == "host"
	}
	if !hasHost {
		return &AuthError{Reason: ErrMalformed, AccessKeyID: s.accessKeyID, Detail: "SignedHeaders must include host"}
	}
	return nil
}

// payloadHash is the hash the canonical request ends with: X-Amz-Content-Sha256 when
// sent (checked against body when it is a hash and body was read), else body's hash.
func payloadHash(r *http.Request, s *signature, body []byte) (string, error) {
	if s.presigned {
		if h := r.URL.Query().Get("X-Amz-Content-Sha256"); h != "" {
			return h, nil
		}
		return "UNSIGNED-PAYLOAD", nil
	}
	h := r.Header.Get("X-Amz-Content-Sha256")
	sum := sha256.Sum256(body)
	switch {
	case h == "":
		return hex.EncodeToString(sum[:]), nil
	case streamingPayloads[h]:
		return h, nil
	case body != nil && h != hex.EncodeToString(sum[:]):
		return "", &AuthError{Reason: ErrBadSignature, AccessKeyID: s.accessKeyID,
			Detail: "The provided 'x-amz-content-sha256' header does not match what was computed."}
	}
	return h, nil
}

func canonicalRequest(r *http.Request, svc Service, s *signature, payload string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	path := rawPath(r)
	if path == "" {
		path = "/"
	}
	if !svc.SingleEscape {
		path = escapePath(path)
	}
	b.WriteString(path)
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery, s.presigned))
	b.WriteByte('\n')
	for _, name := range s.signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(headerValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(s.signedList)
	b.WriteByte('\n')
	b.WriteString(payload)
	return b.String()
}

// rawPath is the path exactly as the client sent it.
func rawPath(r *http.Request) string {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		p, _, _ := strings.Cut(u, "?")
		return p
	}
	return r.URL.EscapedPath()
}

func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		if v := r.Header.Get("Content-Length"); v != "" {
			return v
		}
		if r.ContentLength >= 0 {
			return strconv.FormatInt(r.ContentLength, 10)
		}
	}
	vals := r.Header.Values(name)
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalQuery sorts the parameters by name (values of one name keep their order,
// as the SDKs sign them), each name and value SigV4-escaped; a presigned request's
// X-Amz-Signature is left out.
func canonicalQuery(raw string, presigned bool) string {
	if raw == "" {
		return ""
	}
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		pairs = append(pairs, pair{escape(k), escape(v)})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

// escape is SigV4's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ becomes %XX.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// escapePath escapes each segment of an already escaped path once more, as every
// service but S3 signs it.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = escape(s)
	}
	return strings.Join(segs, "/")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
