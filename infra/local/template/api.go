package template

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Integration types of a WebSocket route.
const (
	IntegrationLambdaProxy = "AWS_PROXY"
)

// WebSocketAPI is an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET.
type WebSocketAPI struct {
	LogicalID                string
	RouteSelectionExpression string
	// Stage is the first stage's name (sorted by logical id); StageVariables its variables.
	Stage          string
	StageVariables map[string]string
	// Routes by route key ($connect, $default, $disconnect, custom keys).
	Routes map[string]*Route
}

// Route is one WebSocket route and its integration.
type Route struct {
	Key string
	// Function is the logical id of the integration's function; IntegrationType is
	// the integration's type (AWS_PROXY for Lambda proxy).
	Function, IntegrationType string
	// Authorizer is set on a route with AuthorizationType CUSTOM.
	Authorizer *Authorizer
	// TwoWay is true when the route has a route response: the integration's response
	// body is sent back to the client.
	TwoWay bool
}

// Authorizer is a Lambda REQUEST authorizer.
type Authorizer struct {
	LogicalID, Name, Type string
	Function              string
	// IdentitySource lists the request parts that must be present and non-empty, such
	// as route.request.querystring.userId or route.request.header.Auth.
	IdentitySource []string
}

// HTTPAPI is an AWS::Serverless::HttpApi (or SAM's implicit ServerlessHttpApi) and
// the HttpApi events of the functions that name it.
type HTTPAPI struct {
	LogicalID      string
	Stage          string
	StageVariables map[string]string
	Routes         []HTTPRoute
	// CORS is the API's CorsConfiguration; nil without one (or with no origin).
	CORS *CORS
}

// CORS is an HTTP API's CorsConfiguration: which browser origins may read its answers.
type CORS struct {
	AllowOrigins, AllowMethods, AllowHeaders, ExposeHeaders []string
	AllowCredentials                                        bool
	// MaxAge is how long a browser may cache a preflight answer, in seconds.
	MaxAge int
}

// HTTPRoute is one HTTP API route.
type HTTPRoute struct {
	Method, Path, Function string
}

// Key returns the route key as API Gateway writes it: "GET /status", "$default".
func (r HTTPRoute) Key() string {
	if r.Path == "$default" {
		return "$default"
	}
	return r.Method + " " + r.Path
}

func (e *evaluator) readWebSocketAPIs(t *Template) ([]*WebSocketAPI, error) {
	var apis []*WebSocketAPI
	byID := map[string]*WebSocketAPI{}
	rs, err := e.ofType(TypeAPI, nil)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		base := "Resources." + r.LogicalID + ".Properties"
		proto, err := e.optStr(r.Properties, "ProtocolType", base)
		if err != nil {
			return nil, err
		}
		if proto != "WEBSOCKET" {
			continue
		}
		a := &WebSocketAPI{LogicalID: r.LogicalID, Routes: map[string]*Route{}}
		if a.RouteSelectionExpression, err = e.optStr(r.Properties, "RouteSelectionExpression", base); err != nil {
			return nil, err
		}
		apis = append(apis, a)
		byID[r.LogicalID] = a
	}
	if len(apis) == 0 {
		return nil, nil
	}
	// Routes, authorizers, integrations and stages name their API through ApiId.
	apiOf := func(r *Resource) *WebSocketAPI {
		for _, id := range Refs(Lookup(r.Properties, "ApiId")) {
			if a := byID[id]; a != nil {
				return a
			}
		}
		return nil
	}
	routesByID := map[string]*Route{}
	for _, r := range e.sorted() {
		a := apiOf(r)
		if a == nil {
			continue
		}
		if ok, err := e.included(r); err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		base := "Resources." + r.LogicalID + ".Properties"
		switch r.Type {
		case TypeStage:
			if a.Stage != "" {
				continue
			}
			var err error
			if a.Stage, err = e.optStr(r.Properties, "StageName", base); err != nil {
				return nil, err
			}
			if a.StageVariables, err = e.strMap(Lookup(r.Properties, "StageVariables"), base+".StageVariables"); err != nil {
				return nil, err
			}
		case TypeRoute:
			rt, err := e.readRoute(r, base)
			if err != nil {
				return nil, err
			}
			if _, dup := a.Routes[rt.Key]; dup {
				return nil, pathErrf(base+".RouteKey", ErrInvalid, "route key %s is declared twice", rt.Key)
			}
			a.Routes[rt.Key] = rt
			routesByID[r.LogicalID] = rt
		}
	}
	for _, r := range e.sorted() {
		if r.Type != TypeRouteResponse || apiOf(r) == nil {
			continue
		}
		for _, id := range Refs(Lookup(r.Properties, "RouteId")) {
			if rt := routesByID[id]; rt != nil {
				rt.TwoWay = true
			}
		}
	}
	return apis, nil
}

func (e *evaluator) readRoute(r *Resource, base string) (*Route, error) {
	rt := &Route{}
	var err error
	if rt.Key, err = e.optStr(r.Properties, "RouteKey", base); err != nil {
		return nil, err
	}
	if rt.Key == "" {
		return nil, pathErrf(base+".RouteKey", ErrInvalid, "route key is required")
	}
	if tgt := Lookup(r.Properties, "Target"); tgt != nil {
		integ := ""
		for _, id := range Refs(tgt) {
			if x, ok := e.resources[id]; ok && x.Type == TypeIntegration {
				integ = id
			}
		}
		if integ == "" {
			return nil, pathErrf(base+".Target", ErrInvalid, "want integrations/${SomeIntegration}")
		}
		ir := e.resources[integ]
		ib := "Resources." + integ + ".Properties"
		if rt.IntegrationType, err = e.optStr(ir.Properties, "IntegrationType", ib); err != nil {
			return nil, err
		}
		if rt.IntegrationType == IntegrationLambdaProxy {
			if rt.Function, err = e.functionOf(Lookup(ir.Properties, "IntegrationUri"), ib+".IntegrationUri"); err != nil {
				return nil, err
			}
		}
	}
	at, err := e.optStr(r.Properties, "AuthorizationType", base)
	if err != nil {
		return nil, err
	}
	if at == "CUSTOM" {
		var authID string
		for _, id := range Refs(Lookup(r.Properties, "AuthorizerId")) {
			if x, ok := e.resources[id]; ok && x.Type == TypeAuthorizer {
				authID = id
			}
		}
		if authID == "" {
			return nil, pathErrf(base+".AuthorizerId", ErrInvalid, "want !Ref of an AWS::ApiGatewayV2::Authorizer")
		}
		if rt.Authorizer, err = e.readAuthorizer(e.resources[authID]); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

func (e *evaluator) readAuthorizer(r *Resource) (*Authorizer, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	a := &Authorizer{LogicalID: r.LogicalID}
	var err error
	if a.Name, err = e.optStr(r.Properties, "Name", base); err != nil {
		return nil, err
	}
	if a.Type, err = e.optStr(r.Properties, "AuthorizerType", base); err != nil {
		return nil, err
	}
	if a.Type != "REQUEST" {
		return nil, pathErrf(base+".AuthorizerType", ErrInvalid, "WebSocket APIs support REQUEST authorizers only, got %q", a.Type)
	}
	if a.Function, err = e.functionOf(Lookup(r.Properties, "AuthorizerUri"), base+".AuthorizerUri"); err != nil {
		return nil, err
	}
	if n := Lookup(r.Properties, "IdentitySource"); n != nil {
		list, err := e.list(n, base+".IdentitySource")
		if err != nil {
			return nil, err
		}
		for _, v := range list {
			s, _ := v.(string)
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					a.IdentitySource = append(a.IdentitySource, part)
				}
			}
		}
	}
	return a, nil
}

func (e *evaluator) readHTTPAPIs(t *Template) ([]*HTTPAPI, error) {
	byID := map[string]*HTTPAPI{}
	rs, err := e.ofType(TypeHTTPAPI, nil)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		base := "Resources." + r.LogicalID + ".Properties"
		a := &HTTPAPI{LogicalID: r.LogicalID, Stage: defaultStageName}
		s, err := e.optStr(r.Properties, "StageName", base)
		if err != nil {
			return nil, err
		}
		if s != "" {
			a.Stage = s
		}
		if a.StageVariables, err = e.strMap(Lookup(r.Properties, "StageVariables"), base+".StageVariables"); err != nil {
			return nil, err
		}
		if a.CORS, err = e.readCORS(Lookup(r.Properties, "CorsConfiguration"), base+".CorsConfiguration"); err != nil {
			return nil, err
		}
		byID[r.LogicalID] = a
	}
	ids := make([]string, 0, len(t.Functions))
	for id := range t.Functions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, ev := range t.Functions[id].Events {
			if ev.Type != EventHTTPAPI {
				continue
			}
			a := byID[ev.HTTPAPI]
			if a == nil && ev.HTTPAPI == implicitHTTPAPIID {
				a = &HTTPAPI{LogicalID: implicitHTTPAPIID, Stage: defaultStageName}
				byID[implicitHTTPAPIID] = a
			}
			if a == nil {
				return nil, pathErrf("Resources."+id+".Properties.Events."+ev.Name+".Properties.ApiId",
					ErrUnknownReference, "%s is not an AWS::Serverless::HttpApi of this template", ev.HTTPAPI)
			}
			a.Routes = append(a.Routes, HTTPRoute{Method: ev.Method, Path: ev.Path, Function: id})
		}
	}
	var out []*HTTPAPI
	for _, a := range byID {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LogicalID < out[j].LogicalID })
	return out, nil
}

func (e *evaluator) strMap(n *yaml.Node, path string) (map[string]string, error) {
	out := map[string]string{}
	if n == nil {
		return out, nil
	}
	v, err := e.eval(n, path)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, pathErrf(path, ErrInvalid, "want a map, got %s", kind(v))
	}
	for k, x := range m {
		s, ok := x.(string)
		if !ok {
			return nil, pathErrf(path+"."+k, ErrInvalid, "want a string, got %s", kind(x))
		}
		if s, err = e.dynamic(s, path+"."+k); err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, nil
}

// readCORS reads a CorsConfiguration (nil when absent, AWS::NoValue, or allowing no
// origin: an empty origin list, as a CommaDelimitedList parameter left empty gives).
func (e *evaluator) readCORS(n *yaml.Node, path string) (*CORS, error) {
	if n == nil {
		return nil, nil
	}
	v, err := e.eval(n, path)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v == noValue || v == nil {
			return nil, nil
		}
		return nil, pathErrf(path, ErrInvalid, "want a CorsConfiguration")
	}
	c := &CORS{}
	strs := func(key string) ([]string, error) {
		var out []string
		list, _ := m[key].([]any)
		if s, ok := m[key].(string); ok {
			list = []any{s}
		}
		for i, x := range list {
			s, ok := x.(string)
			if !ok {
				return nil, pathErrf(fmt.Sprintf("%s.%s[%d]", path, key, i), ErrInvalid, "want a string")
			}
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
	if c.AllowOrigins, err = strs("AllowOrigins"); err != nil {
		return nil, err
	}
	if c.AllowMethods, err = strs("AllowMethods"); err != nil {
		return nil, err
	}
	if c.AllowHeaders, err = strs("AllowHeaders"); err != nil {
		return nil, err
	}
	if c.ExposeHeaders, err = strs("ExposeHeaders"); err != nil {
		return nil, err
	}
	c.AllowCredentials = fmt.Sprint(m["AllowCredentials"]) == "true"
	if age, ok := m["MaxAge"]; ok {
		if c.MaxAge, err = atoiPositive(age); err != nil {
			return nil, pathErrf(path+".MaxAge", ErrInvalid, "%v", err)
		}
	}
	if len(c.AllowOrigins) == 0 {
		return nil, nil
	}
	return c, nil
}
