package apigw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/lambdart"
)

// maxAuthorizerResult is API Gateway's limit on an authorizer's response.
const maxAuthorizerResult = 8 * 1024

// authorizerRequest is the WebSocket REQUEST authorizer event: the REST-shaped
// request with the WebSocket request context (the outer field wins in JSON).
type authorizerRequest struct {
	events.APIGatewayCustomAuthorizerRequestTypeRequest
	RequestContext events.APIGatewayWebsocketProxyRequestContext `json:"requestContext"`
}

// authorize runs the $connect authorizer. It returns 0 when the connection may
// proceed, else the handshake's status and a reason for the log.
func (s *Server) authorize(r *http.Request, c *conn, a *Authorizer) (status int, reason string) {
	for _, src := range a.IdentitySource {
		if !identityPresent(r, src) {
			// API Gateway refuses without invoking the authorizer.
			return http.StatusUnauthorized, "missing identity source " + src
		}
	}
	requestID := newID()
	now := time.Now()
	headers, multi := connectHeaders(r, c)
	q, mq := query(r)
	ev := authorizerRequest{
		APIGatewayCustomAuthorizerRequestTypeRequest: events.APIGatewayCustomAuthorizerRequestTypeRequest{
			Type:                            "REQUEST",
			MethodArn:                       s.methodARN(RouteConnect),
			Headers:                         headers,
			MultiValueHeaders:               multi,
			QueryStringParameters:           q,
			MultiValueQueryStringParameters: mq,
			StageVariables:                  s.cfg.WebSocket.StageVariables,
		},
		RequestContext: c.context(RouteConnect, "CONNECT", requestID, now),
	}
	if ev.StageVariables == nil {
		ev.StageVariables = map[string]string{}
	}
	ev.RequestContext.Authorizer = nil
	payload, err := marshalWithout(ev, "resource", "path", "httpMethod", "pathParameters")
	if err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.IntegrationTimeout)
	defer cancel()
	start := time.Now()
	out, err := s.invoke(ctx, a.Function, payload)
	latency := time.Since(start).Milliseconds()
	if err != nil {
		var fe *lambdart.FunctionError
		if errors.As(err, &fe) && fe.Message == "Unauthorized" {
			return http.StatusUnauthorized, "authorizer: Unauthorized"
		}
		return http.StatusInternalServerError, "authorizer failed: " + err.Error()
	}
	if len(out) > maxAuthorizerResult {
		return http.StatusInternalServerError, "authorizer result over 8 KB"
	}
	var resp authorizerResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return http.StatusInternalServerError, "authorizer response: " + err.Error()
	}
	if resp.PrincipalID == "" {
		return http.StatusInternalServerError, "authorizer response lacks principalId"
	}
	if !resp.PolicyDocument.allows(s.methodARN(RouteConnect)) {
		return http.StatusForbidden, "policy denies"
	}
	authz := map[string]any{}
	for k, v := range resp.Context {
		switch v.(type) {
		case string, float64, bool, json.Number, nil:
			authz[k] = v
		default:
			// API Gateway accepts only strings, numbers and booleans in the context.
			return http.StatusInternalServerError, "authorizer context value " + k + " is not a string, number or boolean"
		}
	}
	authz["principalId"] = resp.PrincipalID
	authz["integrationLatency"] = latency
	c.authorizer = authz
	return 0, ""
}

// identityPresent checks one identity source of a WebSocket authorizer.
func identityPresent(r *http.Request, src string) bool {
	switch {
	case strings.HasPrefix(src, "route.request.querystring."):
		return r.URL.Query().Get(strings.TrimPrefix(src, "route.request.querystring.")) != ""
	case strings.HasPrefix(src, "route.request.header."):
		return r.Header.Get(strings.TrimPrefix(src, "route.request.header.")) != ""
	}
	// Stage variables and context sources always resolve locally.
	return true
}

// connectIntegration invokes the $connect route. It returns 0 to accept, else the
// handshake's status; resp is the integration's response when it gave one.
func (s *Server) connectIntegration(r *http.Request, c *conn, route Route) (resp *events.APIGatewayProxyResponse, status int, reason string) {
	requestID := newID()
	headers, multi := connectHeaders(r, c)
	q, mq := query(r)
	ev := events.APIGatewayWebsocketProxyRequest{
		Headers:                         headers,
		MultiValueHeaders:               multi,
		QueryStringParameters:           q,
		MultiValueQueryStringParameters: mq,
		StageVariables:                  nonEmpty(s.cfg.WebSocket.StageVariables),
		RequestContext:                  c.context(RouteConnect, "CONNECT", requestID, time.Now()),
	}
	payload, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(s.ctx, s.IntegrationTimeout)
	defer cancel()
	out, err := s.invoke(ctx, route.Function, payload)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, http.StatusGatewayTimeout, "connect integration timed out"
		}
		return nil, http.StatusBadGateway, "connect integration failed: " + err.Error()
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(out, &raw) != nil || raw["statusCode"] == nil {
		// A Lambda returning nothing (null) or no statusCode still connects.
		return nil, 0, ""
	}
	var pr events.APIGatewayProxyResponse
	if err := json.Unmarshal(out, &pr); err != nil {
		return nil, http.StatusBadGateway, "connect integration response: " + err.Error()
	}
	if pr.StatusCode < 200 || pr.StatusCode > 299 {
		return &pr, pr.StatusCode, fmt.Sprintf("connect integration returned %d", pr.StatusCode)
	}
	return &pr, 0, ""
}

// connectHeaders returns the handshake headers as API Gateway forwards them, with
// the X-Forwarded-* and trace headers its front end adds.
func connectHeaders(r *http.Request, c *conn) (map[string]string, map[string][]string) {
	multi := map[string][]string{"Host": {r.Host}}
	for k, vs := range r.Header {
		multi[k] = append([]string(nil), vs...)
	}
	multi["X-Forwarded-For"] = []string{c.sourceIP}
	multi["X-Forwarded-Port"] = []string{listenerPort(r)}
	multi["X-Forwarded-Proto"] = []string{"http"}
	multi["X-Amzn-Trace-Id"] = []string{fmt.Sprintf("Root=1-%08x-%s", time.Now().Unix(), strings.ToLower(newAPIID() + newAPIID() + "0000")[:24])}
	single := make(map[string]string, len(multi))
	for k, vs := range multi {
		single[k] = vs[len(vs)-1]
	}
	return single, multi
}

// query returns the query string as API Gateway does: the last value of each
// parameter, and all of them. Both are nil without a query.
func query(r *http.Request) (map[string]string, map[string][]string) {
	q := r.URL.Query()
	if len(q) == 0 {
		return nil, nil
	}
	single := make(map[string]string, len(q))
	for k, vs := range q {
		single[k] = vs[len(vs)-1]
	}
	return single, q
}

// marshalWithout encodes v and drops top-level keys that the real event lacks.
func marshalWithout(v any, keys ...string) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for _, k := range keys {
		delete(m, k)
	}
	return json.Marshal(m)
}

// authorizerResponse is an authorizer's output. Action and Resource may be a string
// or a list, as IAM allows, which aws-lambda-go's type does not accept.
type authorizerResponse struct {
	PrincipalID    string         `json:"principalId"`
	PolicyDocument policyDocument `json:"policyDocument"`
	Context        map[string]any `json:"context"`
}

type policyDocument struct {
	Version   string      `json:"Version"`
	Statement []statement `json:"Statement"`
}

type statement struct {
	Action   stringList `json:"Action"`
	Effect   string     `json:"Effect"`
	Resource stringList `json:"Resource"`
}

type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*l = many
	return nil
}

// allows evaluates the policy for execute-api:Invoke on arn: an explicit Deny wins,
// else an Allow is needed.
func (p policyDocument) allows(arn string) bool {
	allowed := false
	for _, st := range p.Statement {
		if !anyMatch(st.Action, "execute-api:Invoke") || !anyMatch(st.Resource, arn) {
			continue
		}
		switch strings.ToLower(st.Effect) {
		case "deny":
			return false
		case "allow":
			allowed = true
		}
	}
	return allowed
}

func anyMatch(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches IAM wildcards: * any run of characters (slashes included), ? one.
func globMatch(pattern, s string) bool {
	// path.Match treats / specially; IAM does not, so compare with slashes mapped away.
	const sep = "\x00"
	ok, err := path.Match(strings.ReplaceAll(escapeGlob(pattern), "/", sep), strings.ReplaceAll(s, "/", sep))
	return err == nil && ok
}

// escapeGlob escapes the characters path.Match treats specially beyond * and ?.
func escapeGlob(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`)
	return r.Replace(p)
}
