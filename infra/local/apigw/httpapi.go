package apigw

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/logging"
)

// maxHTTPBody is the HTTP API's 10 MB request payload limit.
const maxHTTPBody = 10 << 20

// serveHTTPAPI is the HTTP API with payload format 2.0.
func (s *Server) serveHTTPAPI(w http.ResponseWriter, r *http.Request) {
	api := s.cfg.HTTP
	if c := api.CORS; c != nil {
		if isPreflight(r) {
			preflight(w, r, c)
			return
		}
		if allow := allowedOrigin(c, r.Header.Get("Origin")); allow != "" {
			w = &corsWriter{ResponseWriter: w, c: c, allow: allow}
		}
	}
	rawPath := r.URL.EscapedPath()
	routePath := r.URL.Path
	if api.Stage != "" && api.Stage != "$default" {
		rest, ok := strings.CutPrefix(routePath, "/"+api.Stage)
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			writeJSONError(w, http.StatusNotFound, "Not Found")
			return
		}
		routePath = rest
		if routePath == "" {
			routePath = "/"
		}
	}
	route, params, ok := matchHTTPRoute(api.Routes, r.Method, routePath)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHTTPBody+1))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if len(body) > maxHTTPBody {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	now := time.Now()
	requestID := newID()
	key := HTTPRoute{Method: route.Method, Path: route.Path}.key()
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       key,
		RawPath:        rawPath,
		RawQueryString: r.URL.RawQuery,
		Headers:        map[string]string{},
		PathParameters: params,
		StageVariables: nonEmpty(api.StageVariables),
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     key,
			AccountID:    s.AccountID,
			Stage:        api.Stage,
			RequestID:    requestID,
			APIID:        api.APIID,
			DomainName:   r.Host,
			DomainPrefix: strings.Split(r.Host, ".")[0],
			Time:         requestTime(now),
			TimeEpoch:    now.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: r.Method, Path: rawPath, Protocol: r.Proto, SourceIP: sourceIP(r), UserAgent: r.UserAgent(),
			},
		},
	}
	// Format 2.0 lower-cases header names and joins repeated values with commas;
	// cookies move to their own field.
	for k, vs := range r.Header {
		if strings.EqualFold(k, "Cookie") {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	ev.Headers["host"] = r.Host
	ev.Headers["x-forwarded-for"] = sourceIP(r)
	ev.Headers["x-forwarded-port"] = listenerPort(r)
	ev.Headers["x-forwarded-proto"] = "http"
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
	payload, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(r.Context(), s.HTTPIntegrationTimeout)
	defer cancel()
	out, err := s.invoke(ctx, route.Function, payload)
	log := s.log.With(logging.Route, key, logging.RequestID, requestID)
	if err != nil {
		log.Warn("integration failed", logging.Error, err.Error())
		if errors.Is(err, context.DeadlineExceeded) {
			writeJSONError(w, http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
		writeJSONError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	writeHTTPResponse(w, out)
	log.Debug("http request", "method", r.Method, "path", rawPath)
}

// writeHTTPResponse turns a format 2.0 response into HTTP. A response without a
// statusCode is taken as the body of a 200 JSON response, as API Gateway infers.
func writeHTTPResponse(w http.ResponseWriter, out []byte) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(out, &probe) != nil || probe["statusCode"] == nil {
		if !json.Valid(out) {
			writeJSONError(w, http.StatusInternalServerError, "Internal Server Error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode < 100 || resp.StatusCode > 599 {
		writeJSONError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	for _, c := range resp.Cookies {
		w.Header().Add("Set-Cookie", c)
	}
	body := []byte(resp.Body)
	if resp.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(resp.Body)
		if err != nil {
			writeJSONError(w, http.StatusInternalServerError, "Internal Server Error")
			return
		}
		body = b
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

func (r HTTPRoute) key() string {
	if r.Path == RouteDefault {
		return RouteDefault
	}
	return r.Method + " " + r.Path
}

// matchHTTPRoute picks the route as API Gateway does: the most specific path wins
// (literal segments over {param}, {param} over {proxy+}), a method over ANY, and
// $default catches the rest.
func matchHTTPRoute(routes []HTTPRoute, method, p string) (HTTPRoute, map[string]string, bool) {
	best, bestScore := -1, -1
	var bestParams map[string]string
	var def *HTTPRoute
	for i, rt := range routes {
		if rt.Path == RouteDefault {
			def = &routes[i]
			continue
		}
		if rt.Method != "ANY" && rt.Method != method {
			continue
		}
		params, score, ok := matchPath(rt.Path, p)
		if !ok {
			continue
		}
		score *= 2
		if rt.Method != "ANY" {
			score++
		}
		if score > bestScore {
			best, bestScore, bestParams = i, score, params
		}
	}
	if best >= 0 {
		return routes[best], bestParams, true
	}
	if def != nil {
		return *def, nil, true
	}
	return HTTPRoute{}, nil, false
}

func matchPath(tmpl, p string) (map[string]string, int, bool) {
	ts := strings.Split(strings.Trim(tmpl, "/"), "/")
	ps := strings.Split(strings.Trim(p, "/"), "/")
	params := map[string]string{}
	score := 0
	for i, t := range ts {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "+}") {
			if i >= len(ps) || ps[i] == "" {
				return nil, 0, false
			}
			params[t[1:len(t)-2]] = strings.Join(ps[i:], "/")
			return params, score, true
		}
		if i >= len(ps) {
			return nil, 0, false
		}
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			if ps[i] == "" {
				return nil, 0, false
			}
			params[t[1:len(t)-1]] = ps[i]
			score += 1
			continue
		}
		if t != ps[i] {
			return nil, 0, false
		}
		score += 2
	}
	if len(ps) != len(ts) {
		return nil, 0, false
	}
	if len(params) == 0 {
		params = nil
	}
	return params, score, true
}
