package s3local

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/r2creds"
)

// R2Config makes the endpoint answer as Cloudflare R2 does: requests are signed (SigV4,
// region auto) with an R2 API token's S3 credentials — the parent — or with temporary
// credentials derived from it by client-side signing
// (https://developers.cloudflare.com/r2/api/s3/temporary-credentials/), and are
// allowed by the token's permission and, for temporary credentials, by the JWT's
// bucket, scope, actions and paths. There is no IAM in R2 mode.
type R2Config struct {
	// AccountID is the account that owns the bucket (the JWT's sub).
	AccountID string
	// AccessKeyID and SecretAccessKey are the parent API token's S3 credentials.
	AccessKeyID, SecretAccessKey string
	// Permission is the parent token's (r2creds.AdminReadWrite when empty); Buckets,
	// when set, the buckets it is scoped to (an Object Read & Write token's).
	Permission r2creds.Permission
	Buckets    []string
	// Audience is the host a temporary credential's JWT must name (aud):
	// <AccountID>.r2.cloudflarestorage.com when empty, what r2creds.Mint names for an
	// empty endpoint.
	Audience string
	// Now is the clock tokens and signatures are judged by (time.Now when nil).
	Now func() time.Time
}

// What the local R2 checks, and what of it Cloudflare documents:
//
//   - The session token is base64 of "jwt/" + a JWT signed HS256 with the parent
//     secret; the temporary secret is the JWT's SHA-256, hex; the access key ID is the
//     parent's (documented: the temporary-credentials page and its example). The
//     JWT's iss must be the parent's key ID, sub the account, aud the endpoint's host
//     and exp in the future (the claims the reference helper sets; which of them R2
//     checks, and how, is not documented).
//   - A credential is bound to one bucket; its scope (object-read-only: read and list;
//     object-read-write: also write; admin-*: also the bucket's configuration) and its
//     actions and paths limit it, and it cannot exceed its parent (documented). Refusals
//     are 403 AccessDenied, as the example's out-of-prefix read is.
//   - Bad or expired credentials are 401 Unauthorized, a wrong signature 403
//     SignatureDoesNotMatch, a request time more than 15 minutes off 400 ExpiredRequest
//     (R2's error codes, https://developers.cloudflare.com/r2/api/error-codes/).
//   - Not documented, and chosen here as the likeliest (UNVERIFIED against R2): a
//     listing (ListObjects, ListObjectsV2, ListMultipartUploads) under a path-scoped
//     credential is allowed only when its prefix parameter starts with one of the
//     credential's prefixPaths or equals one of its objectPaths, and refused as a
//     whole otherwise (R2 could instead filter the listing); a DeleteObjects naming any
//     key outside the paths is refused as a whole; ListBuckets is refused to a
//     temporary credential; presigned requests are not supported by the local stack.
type r2gate struct {
	cfg  R2Config
	next http.Handler
	log  *slog.Logger
}

// r2Grant is what a verified caller may do.
type r2Grant struct {
	permission r2creds.Permission
	buckets    []string // empty: every bucket
	temporary  *r2creds.Claims
}

func (g *r2gate) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}

func (g *r2gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte // a POST's XML body; object bodies stream through
	if r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, MaxPostBytes+1))
		r.Body.Close()
		if err != nil || len(b) > MaxPostBytes {
			g.refuse(w, r, &s3Error{status: http.StatusBadRequest, code: "MalformedXML", msg: "The request body could not be read."})
			return
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	grant, e := g.verify(r, body)
	if e != nil {
		g.refuse(w, r, e)
		return
	}
	op, err := classifyR2(r, body)
	if err != nil {
		g.refuse(w, r, &s3Error{status: http.StatusBadRequest, code: "MalformedXML", msg: err.Error()})
		return
	}
	if why := grant.allows(op); why != "" {
		g.log.Info("r2 request refused", LogReason, "AccessDenied", LogMethod, r.Method, LogPath, r.URL.Path, LogError, why)
		g.refuse(w, r, &s3Error{status: http.StatusForbidden, code: "AccessDenied", msg: "Access Denied"})
		return
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if isSHA256Hex(payload) && body == nil && r.Body != nil && r.Body != http.NoBody {
		cb := &checkedBody{rc: r.Body, h: sha256.New(), want: payload}
		r.Body = cb
		iw := &interceptWriter{ResponseWriter: w, r: r, checks: []func(int) *s3Error{cb.check}}
		g.next.ServeHTTP(iw, r)
		iw.finish()
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *r2gate) refuse(w http.ResponseWriter, r *http.Request, e *s3Error) {
	if e.code != "AccessDenied" {
		g.log.Info("r2 request refused", LogReason, e.code, LogMethod, r.Method, LogPath, r.URL.Path, LogError, e.msg)
	}
	writeError(w, r, e)
}

func unauthorized(msg string) *s3Error {
	return &s3Error{status: http.StatusUnauthorized, code: "Unauthorized", msg: msg}
}

// verify checks the request's SigV4 signature, with the parent's secret or a
// temporary credential's, and returns what the caller may do.
func (g *r2gate) verify(r *http.Request, body []byte) (*r2Grant, *s3Error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return nil, unauthorized("presigned requests are not supported by the local stack in R2 mode")
		}
		return nil, unauthorized("Unauthorized")
	}
	alg, rest, _ := strings.Cut(authz, " ")
	if alg != "AWS4-HMAC-SHA256" {
		return nil, unauthorized("Unsupported authorization type")
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		params[k] = v
	}
	scope := strings.Split(params["Credential"], "/")
	signed := strings.Split(params["SignedHeaders"], ";")
	if len(scope) != 5 || scope[4] != "aws4_request" || scope[3] != "s3" || params["Signature"] == "" || !slices.Contains(signed, "host") {
		return nil, unauthorized("Authorization header is malformed")
	}
	keyID, date, region := scope[0], scope[1], scope[2]
	if region != "auto" && region != "us-east-1" && region != "" {
		return nil, unauthorized("Credential should be scoped to a valid region (auto)")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, date) {
		return nil, unauthorized("X-Amz-Date is missing, malformed or not the credential's date")
	}
	if d := g.now().Sub(t); d > r2MaxSkew || d < -r2MaxSkew {
		return nil, &s3Error{status: http.StatusBadRequest, code: "ExpiredRequest", msg: "The request signature has expired."}
	}
	if subtle.ConstantTimeCompare([]byte(keyID), []byte(g.cfg.AccessKeyID)) != 1 {
		return nil, unauthorized("The access key ID is not known.")
	}
	grant := &r2Grant{permission: g.cfg.Permission, buckets: g.cfg.Buckets}
	if grant.permission == "" {
		grant.permission = r2creds.AdminReadWrite
	}
	secret := g.cfg.SecretAccessKey
	if tok := r.Header.Get("X-Amz-Security-Token"); tok != "" {
		claims, tempSecret, why := g.token(tok, keyID)
		if why != "" {
			return nil, unauthorized(why)
		}
		grant.temporary, secret = claims, tempSecret
	}

	payload := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case payload == "":
		return nil, &s3Error{status: http.StatusBadRequest, code: "InvalidRequest", msg: "Missing required header for this request: x-amz-content-sha256"}
	case body != nil && isSHA256Hex(payload):
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != payload {
			return nil, contentMismatch(payload, hex.EncodeToString(sum[:]))
		}
	}
	canonical := r2Canonical(r, signed, params["SignedHeaders"], payload)
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + date + "/" + region + "/s3/aws4_request\n" + hex.EncodeToString(sum[:])
	k := mac([]byte("AWS4"+secret), date)
	k = mac(k, region)
	k = mac(k, "s3")
	k = mac(k, "aws4_request")
	if !hmac.Equal([]byte(hex.EncodeToString(mac(k, toSign))), []byte(params["Signature"])) {
		return nil, &s3Error{status: http.StatusForbidden, code: "SignatureDoesNotMatch",
			msg: "The request signature we calculated does not match the signature you provided. Check your secret access key and signing method."}
	}
	return grant, nil
}

// token verifies a temporary credential's session token and returns its claims and
// the secret it derives; why says what is wrong with it.
func (g *r2gate) token(tok, keyID string) (claims *r2creds.Claims, secret, why string) {
	raw, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), r2creds.TokenPrefix) {
		return nil, "", "The session token is malformed."
	}
	jwt := strings.TrimPrefix(string(raw), r2creds.TokenPrefix)
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, "", "The session token is malformed."
	}
	var head struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &head) != nil || head.Alg != "HS256" {
		return nil, "", "The session token is malformed."
	}
	want := mac([]byte(g.cfg.SecretAccessKey), parts[0]+"."+parts[1])
	got, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(want, got) {
		return nil, "", "The session token is not signed by the access key's secret."
	}
	var c r2creds.Claims
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(pb, &c) != nil {
		return nil, "", "The session token is malformed."
	}
	aud := g.cfg.Audience
	if aud == "" {
		aud = g.cfg.AccountID + ".r2.cloudflarestorage.com"
	}
	now := g.now().Unix()
	switch {
	case c.Issuer != keyID:
		return nil, "", "The session token was issued for another access key."
	case c.Subject != g.cfg.AccountID:
		return nil, "", "The session token names another account."
	case c.Audience != aud:
		return nil, "", "The session token names another endpoint."
	case c.Expiry <= now:
		return nil, "", "The session token has expired."
	case c.IssuedAt > now+int64(r2MaxSkew/time.Second):
		return nil, "", "The session token is not valid yet."
	case c.Bucket == "" || !c.Scope.Valid():
		return nil, "", "The session token names no bucket or no valid scope."
	}
	sum := sha256.Sum256([]byte(jwt))
	return &c, hex.EncodeToString(sum[:]), ""
}

// r2MaxSkew is how far a request's time may be from the endpoint's clock.
const r2MaxSkew = 15 * time.Minute

// r2Canonical is SigV4's canonical request for S3: the path as sent, the sorted query,
// the signed headers, the payload hash.
func r2Canonical(r *http.Request, signed []string, signedList, payload string) string {
	path := r.URL.EscapedPath()
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		path, _, _ = strings.Cut(u, "?")
	}
	if path == "" {
		path = "/"
	}
	var b strings.Builder
	b.WriteString(r.Method + "\n" + path + "\n" + r2Query(r.URL.RawQuery) + "\n")
	for _, name := range signed {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" && r.ContentLength >= 0 {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			vals := r.Header.Values(name)
			for i, x := range vals {
				vals[i] = strings.Join(strings.Fields(x), " ")
			}
			v = strings.Join(vals, ",")
		}
		b.WriteString(name + ":" + v + "\n")
	}
	b.WriteString("\n" + signedList + "\n" + payload)
	return b.String()
}

func r2Query(raw string) string {
	if raw == "" {
		return ""
	}
	var pairs [][2]string
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		pairs = append(pairs, [2]string{sigEscape(k), sigEscape(v)})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p[0] + "=" + p[1]
	}
	return strings.Join(out, "&")
}

func sigEscape(s string) string {
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

func mac(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// opClass is what a permission must allow for an operation.
type opClass int

const (
	classRead opClass = iota
	classList
	classWrite
	classConfigRead
	classConfigWrite
	classListBuckets
)

// r2Op is one request as R2 authorises it.
type r2Op struct {
	action string // the S3 operation, as R2's actions name it
	class  opClass
	bucket string
	keys   []string // the object keys it reads or writes
	prefix string   // a listing's prefix parameter
	list   bool
}

// configSubresources mark a bucket-configuration request.
var configSubresources = []string{"cors", "lifecycle", "encryption", "policy", "acl", "tagging", "versioning", "website",
	"logging", "notification", "replication", "ownershipControls", "publicAccessBlock", "object-lock", "accelerate",
	"requestPayment", "analytics", "metrics", "inventory", "intelligent-tiering", "policyStatus"}

// classifyR2 names the operation a request asks for.
func classifyR2(r *http.Request, body []byte) (r2Op, error) {
	bucket, key := splitPath(r.URL.Path)
	q := r.URL.Query()
	op := r2Op{bucket: bucket}
	config := slices.ContainsFunc(configSubresources, q.Has)
	switch {
	case bucket == "":
		op.action, op.class = "ListBuckets", classListBuckets
	case key == "":
		switch r.Method {
		case http.MethodGet:
			switch {
			case q.Has("location"):
				op.action, op.class = "GetBucketLocation", classRead
			case q.Has("uploads"):
				op.action, op.class, op.list, op.prefix = "ListMultipartUploads", classList, true, q.Get("prefix")
			case config:
				op.action, op.class = "GetBucketConfiguration", classConfigRead
			case q.Get("list-type") == "2":
				op.action, op.class, op.list, op.prefix = "ListObjectsV2", classList, true, q.Get("prefix")
			default:
				op.action, op.class, op.list, op.prefix = "ListObjectsV1", classList, true, q.Get("prefix")
			}
		case http.MethodHead:
			op.action, op.class = "HeadBucket", classRead
		case http.MethodPost:
			if !q.Has("delete") {
				return op, errors.New("unknown bucket operation")
			}
			op.action, op.class = "DeleteObjects", classWrite
			var in struct {
				Objects []struct {
					Key string `xml:"Key"`
				} `xml:"Object"`
			}
			if err := xml.Unmarshal(body, &in); err != nil {
				return op, errors.New("The XML you provided was not well-formed or did not validate against our published schema")
			}
			for _, o := range in.Objects {
				op.keys = append(op.keys, o.Key)
			}
		default: // PUT, DELETE: create or delete the bucket, or edit its configuration
			op.action, op.class = "EditBucket", classConfigWrite
		}
	default:
		op.keys = []string{key}
		copySource := r.Header.Get("X-Amz-Copy-Source")
		switch r.Method {
		case http.MethodGet:
			op.action, op.class = "GetObject", classRead
			if q.Has("uploadId") {
				op.action = "ListParts"
			}
		case http.MethodHead:
			op.action, op.class = "HeadObject", classRead
		case http.MethodPut:
			op.class = classWrite
			switch {
			case q.Has("uploadId") && copySource != "":
				op.action = "UploadPartCopy"
			case q.Has("uploadId"):
				op.action = "UploadPart"
			case copySource != "":
				op.action = "CopyObject"
			default:
				op.action = "PutObject"
			}
			if copySource != "" {
				src, _ := url.PathUnescape(strings.SplitN(copySource, "?", 2)[0])
				srcBucket, srcKey := splitPath("/" + strings.TrimPrefix(src, "/"))
				if srcBucket != bucket {
					op.bucket = "" // another bucket: no credential of one bucket reaches both
				}
				op.keys = append(op.keys, srcKey)
			}
		case http.MethodPost:
			op.class = classWrite
			switch {
			case q.Has("uploads"):
				op.action = "CreateMultipartUpload"
			case q.Has("uploadId"):
				op.action = "CompleteMultipartUpload"
			default:
				return op, errors.New("unknown object operation")
			}
		case http.MethodDelete:
			op.action, op.class = "DeleteObject", classWrite
			if q.Has("uploadId") {
				op.action = "AbortMultipartUpload"
			}
		default:
			return op, errors.New("unknown object operation")
		}
	}
	return op, nil
}

// permits reports whether an R2 permission allows an operation class.
func permits(p r2creds.Permission, c opClass) bool {
	switch c {
	case classRead, classList:
		return p.Valid()
	case classWrite:
		return p == r2creds.ObjectReadWrite || p == r2creds.AdminReadWrite
	case classConfigRead, classListBuckets:
		return p == r2creds.AdminReadOnly || p == r2creds.AdminReadWrite
	case classConfigWrite:
		return p == r2creds.AdminReadWrite
	}
	return false
}

// allows returns why op is refused, or "".
func (g *r2Grant) allows(op r2Op) string {
	if !permits(g.permission, op.class) {
		return fmt.Sprintf("the API token's permission %s does not allow %s", g.permission, op.action)
	}
	if op.class != classListBuckets && len(g.buckets) > 0 && !slices.Contains(g.buckets, op.bucket) {
		return fmt.Sprintf("the API token is not scoped to bucket %q", op.bucket)
	}
	c := g.temporary
	if c == nil {
		return ""
	}
	switch {
	case !permits(c.Scope, op.class):
		return fmt.Sprintf("the temporary credential's scope %s does not allow %s", c.Scope, op.action)
	case op.class == classListBuckets || op.bucket != c.Bucket:
		return fmt.Sprintf("the temporary credential is bound to bucket %q", c.Bucket)
	case len(c.Actions) > 0 && !slices.Contains(c.Actions, op.action):
		return fmt.Sprintf("the temporary credential's actions do not include %s", op.action)
	}
	if c.Paths == nil || len(c.Paths.PrefixPaths)+len(c.Paths.ObjectPaths) == 0 {
		return ""
	}
	inPaths := func(key string) bool {
		for _, p := range c.Paths.PrefixPaths {
			if strings.HasPrefix(key, p) {
				return true
			}
		}
		return slices.Contains(c.Paths.ObjectPaths, key)
	}
	if op.list && !inPaths(op.prefix) {
		return fmt.Sprintf("listing prefix %q is outside the temporary credential's paths (unverified: R2 does not document listings under path-scoped credentials)", op.prefix)
	}
	for _, k := range op.keys {
		if !inPaths(k) {
			return fmt.Sprintf("key %q is outside the temporary credential's paths", k)
		}
	}
	return ""
}
