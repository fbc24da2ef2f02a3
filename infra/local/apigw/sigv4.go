package apigw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

const sigV4Algorithm = "AWS4-HMAC-SHA256"

// checkSignature requires a SigV4 Authorization header, as the management API does,
// and verifies it when Server.Credentials knows the access key. It returns 0 when
// the request may proceed.
func (s *Server) checkSignature(r *http.Request, body []byte) (status int, typ, msg string) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return http.StatusForbidden, errForbidden, "Missing Authentication Token"
	}
	alg, rest, _ := strings.Cut(auth, " ")
	if alg != sigV4Algorithm {
		return http.StatusForbidden, errBadSignature, "Unsupported authorization type"
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		params[k] = v
	}
	cred, signed, sig := params["Credential"], params["SignedHeaders"], params["Signature"]
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || signed == "" || sig == "" || scope[4] != "aws4_request" {
		return http.StatusForbidden, errBadSignature, "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters"
	}
	if s.Credentials == nil {
		return 0, "", ""
	}
	secret, ok := s.Credentials(scope[0])
	if !ok {
		return http.StatusForbidden, "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	date := r.Header.Get("X-Amz-Date")
	canonical := canonicalRequest(r, strings.Split(signed, ";"), signed, body)
	sum := sha256.Sum256([]byte(canonical))
	toSign := sigV4Algorithm + "\n" + date + "\n" + strings.Join(scope[1:], "/") + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + secret)
	for _, part := range scope[1:] {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return http.StatusForbidden, errBadSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
	}
	return 0, "", ""
}

func canonicalRequest(r *http.Request, names []string, signed string, body []byte) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	// Services other than S3 sign the escaped path escaped once more.
	b.WriteString(escapePath(r.URL.EscapedPath()) + "\n")
	b.WriteString(canonicalQuery(r.URL.Query()) + "\n")
	for _, n := range names {
		var v string
		if n == "host" {
			v = r.Host
		} else {
			vals := r.Header.Values(n)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		b.WriteString(n + ":" + v + "\n")
	}
	b.WriteString("\n" + signed + "\n")
	hash := r.Header.Get("X-Amz-Content-Sha256")
	if hash == "" {
		sum := sha256.Sum256(body)
		hash = hex.EncodeToString(sum[:])
	}
	b.WriteString(hash)
	return b.String()
}

func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// escape is SigV4's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ is %XX.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

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
