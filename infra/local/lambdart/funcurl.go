package lambdart

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// Function URL auth types (FunctionUrlConfig.AuthType).
const (
	// AuthTypeIAM: every request is SigV4-signed for the service "lambda" and
	// authorised (lambda:InvokeFunctionUrl and lambda:InvokeFunction).
	AuthTypeIAM = "AWS_IAM"
	// AuthTypeNone: anyone may call the URL.
	AuthTypeNone = "NONE"
)

// funcURL is one function's URL: its own loopback listener, as each function URL has
// its own host name.
type funcURL struct {
	id  string // the URL id: <id>.lambda-url.<region>.on.aws
	ln  net.Listener
	srv *http.Server
}

// FunctionURL returns the URL of function's function URL ("http://127.0.0.1:port/"),
// or "" when the function has none (no URLAuthType) or is unknown. Its requests
// invoke the function with the function URL payload (format 2.0).
func (r *Runtime) FunctionURL(function string) string {
	r.mu.Lock()
	p := r.pools[function]
	r.mu.Unlock()
	if p == nil || p.url == nil {
		return ""
	}
	return "http://" + p.url.ln.Addr().String() + "/"
}

func (p *pool) listenURL() error {
	if ln := p.fn.URLListener; ln != nil {
		if ap, ok := ln.Addr().(*net.TCPAddr); !ok || !ap.IP.IsLoopback() {
			ln.Close()
			return fmt.Errorf("listen %s: not a loopback address", ln.Addr())
		}
		p.serveURLOn(ln)
		return nil
	}
	addr := p.fn.URLAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("listen %s: not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	p.serveURLOn(ln)
	return nil
}

func (p *pool) serveURLOn(ln net.Listener) {
	u := &funcURL{id: urlID(), ln: ln}
	u.srv = &http.Server{Handler: http.HandlerFunc(p.serveURL), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	p.url = u
}

func (p *pool) closeURL() {
	if p.url != nil {
		_ = p.url.srv.Close()
	}
}

// serveURL is the function URL: the request checked as the URL's auth type requires,
// turned into the function URL event, the function's response into HTTP.
func (p *pool) serveURL(w http.ResponseWriter, r *http.Request) {
	rt := p.rt
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPayloadBytes+1))
	if err != nil {
		urlError(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if len(body) > MaxPayloadBytes {
		urlError(w, http.StatusRequestEntityTooLarge, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	var caller *events.LambdaFunctionURLRequestContextAuthorizerIAMDescription
	if p.fn.URLAuthType == AuthTypeIAM && rt.Authority != nil {
		principal, err := rt.Authority.Verify(r, identity.Lambda, body)
		if err == nil && rt.Authorizer != nil {
			err = iampolicy.AuthorizeAll(r.Context(), rt.Authorizer, principal,
				iampolicy.LambdaFunctionURL(rt.env(), r.TLS != nil, p.fn.Name, "", AuthTypeIAM))
		}
		if err != nil {
			// A function URL tells the caller nothing more than this.
			p.log.Info("function url request refused", logging.Reason, err.Error())
			w.Header().Set("X-Amzn-Errortype", "AccessDeniedException")
			urlError(w, http.StatusForbidden, "Forbidden")
			return
		}
		caller = &events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{
			AccessKey: accessKeyID(r), AccountID: principal.Account, CallerID: principal.UserID,
			UserARN: principal.ARN, UserID: principal.UserID,
		}
	}
	payload, err := json.Marshal(p.urlEvent(r, body, caller))
	if err != nil {
		urlError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	out, err := rt.Invoke(r.Context(), p.fn.Name, payload)
	var fe *FunctionError
	switch {
	case errors.As(err, &fe):
		urlError(w, http.StatusBadGateway, "Internal Server Error")
	case errors.Is(err, ErrPayloadTooLarge):
		urlError(w, http.StatusRequestEntityTooLarge, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
	case errors.Is(err, ErrThrottled):
		urlError(w, http.StatusTooManyRequests, "Too Many Requests")
	case err != nil:
		p.log.Warn("function url invocation failed", logging.Error, err.Error())
		urlError(w, http.StatusServiceUnavailable, "Service Unavailable")
	default:
		writeURLResponse(w, out)
	}
}

// urlEvent is the function URL payload (format 2.0) for r: header names in lower
// case with repeated values joined by commas, cookies in their own field, a body that
// is not UTF-8 in base64. caller is the IAM caller of an AWS_IAM URL.
func (p *pool) urlEvent(r *http.Request, body []byte, caller *events.LambdaFunctionURLRequestContextAuthorizerIAMDescription) events.LambdaFunctionURLRequest {
	now := time.Now()
	rawPath := r.URL.EscapedPath()
	account := "anonymous"
	var auth *events.LambdaFunctionURLRequestContextAuthorizerDescription
	if caller != nil {
		account = p.rt.AccountID
		auth = &events.LambdaFunctionURLRequestContextAuthorizerDescription{IAM: caller}
	}
	ev := events.LambdaFunctionURLRequest{
		Version:        "2.0",
		RawPath:        rawPath,
		RawQueryString: r.URL.RawQuery,
		Headers:        map[string]string{},
		RequestContext: events.LambdaFunctionURLRequestContext{
			AccountID:    account,
			RequestID:    newRequestID(),
			Authorizer:   auth,
			APIID:        p.url.id,
			DomainName:   r.Host,
			DomainPrefix: p.url.id,
			Time:         now.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:    now.UnixMilli(),
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{
				Method: r.Method, Path: rawPath, Protocol: r.Proto, SourceIP: sourceIP(r), UserAgent: r.UserAgent(),
			},
		},
	}
	for k, vs := range r.Header {
		switch strings.ToLower(k) {
		case "cookie":
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
		case "authorization", "x-amz-security-token":
			// The caller's signature and session token stay with the URL.
		default:
			ev.Headers[strings.ToLower(k)] = strings.Join(vs, ",")
		}
	}
	ev.Headers["host"] = r.Host
	ev.Headers["x-forwarded-for"] = sourceIP(r)
	ev.Headers["x-forwarded-proto"] = "http"
	if _, port, err := net.SplitHostPort(p.url.ln.Addr().String()); err == nil {
		ev.Headers["x-forwarded-port"] = port
	}
	ev.Headers["x-amzn-trace-id"] = traceID()
	if q := r.URL.Query(); len(q) > 0 {
		ev.QueryStringParameters = map[string]string{}
		for k, vs := range q {
			ev.QueryStringParameters[k] = strings.Join(vs, ",")
		}
	}
	if len(body) > 0 {
		if utf8.Valid(body) {
			ev.Body = string(body)
		} else {
			ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
	}
	return ev
}

// writeURLResponse maps a function's response to HTTP as Lambda does for function
// URLs: a JSON object with a statusCode is a LambdaFunctionURLResponse; any other
// valid JSON is the body of a 200 application/json response.
func writeURLResponse(w http.ResponseWriter, out []byte) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(out, &probe) != nil || probe["statusCode"] == nil {
		if !json.Valid(out) {
			urlError(w, http.StatusBadGateway, "Internal Server Error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return
	}
	var resp events.LambdaFunctionURLResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode < 100 || resp.StatusCode > 599 {
		urlError(w, http.StatusBadGateway, "Internal Server Error")
		return
	}
	body := []byte(resp.Body)
	if resp.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(resp.Body)
		if err != nil {
			urlError(w, http.StatusBadGateway, "Internal Server Error")
			return
		}
		body = b
	}
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	for _, c := range resp.Cookies {
		w.Header().Add("Set-Cookie", c)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// urlError writes a function URL's own error: {"Message": msg}.
func urlError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"Message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// accessKeyID returns the access key id r is signed with.
func accessKeyID(r *http.Request) string {
	cred := r.URL.Query().Get("X-Amz-Credential")
	if h := r.Header.Get("Authorization"); h != "" {
		_, params, _ := strings.Cut(h, " ")
		for _, part := range strings.Split(params, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(part), "Credential="); ok {
				cred = v
			}
		}
	}
	id, _, _ := strings.Cut(cred, "/")
	return id
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return strings.Trim(host, "[]")
}

// urlID returns a 32-character lower-case id like a function URL's.
func urlID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
