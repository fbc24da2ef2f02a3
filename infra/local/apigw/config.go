package apigw

import (
	"context"
	"fmt"

	"github.com/sandgate/sandgate/infra/local/template"
)

// Invoker runs a function synchronously; the local Lambda runtime satisfies it. A
// failed invocation returns an error and API Gateway answers as it does for a
// Lambda error.
type Invoker interface {
	Invoke(ctx context.Context, function string, payload []byte) ([]byte, error)
}

// Route keys API Gateway gives a meaning.
const (
	RouteConnect    = "$connect"
	RouteDisconnect = "$disconnect"
	RouteDefault    = "$default"
)

// Config is what the gateway serves.
type Config struct {
	WebSocket *WebSocketAPI
	HTTP      *HTTPAPI
}

// WebSocketAPI is one WebSocket API stage.
type WebSocketAPI struct {
	// APIID appears in events and ARNs; a random 10-character id when empty.
	APIID                    string
	Stage                    string
	StageVariables           map[string]string
	RouteSelectionExpression string
	// Routes by route key.
	Routes map[string]Route
}

// Route is a WebSocket route's Lambda proxy integration. An empty Function stands
// for an integration the emulator cannot run; invoking it is an integration error.
type Route struct {
	Function   string
	Authorizer *Authorizer
	// TwoWay sends the integration's response body back to the client.
	TwoWay bool
}

// Authorizer is a Lambda REQUEST authorizer.
type Authorizer struct {
	Function string
	// IdentitySource entries (route.request.querystring.X, route.request.header.X)
	// must all be present and non-empty, or the handshake is refused with 401
	// without invoking the authorizer.
	IdentitySource []string
}

// HTTPAPI is one HTTP API stage (payload format 2.0).
type HTTPAPI struct {
	APIID string
	// Stage "$default" serves routes at the root; any other name prefixes the paths.
	Stage          string
	StageVariables map[string]string
	Routes         []HTTPRoute
	// CORS, when set, is answered as API Gateway answers an API's CorsConfiguration.
	CORS *template.CORS
}

// HTTPRoute is one route: Method ("GET", ..., or "ANY") and Path ("/status",
// "/items/{id}", "/files/{proxy+}", or "$default").
type HTTPRoute struct {
	Method, Path, Function string
}

// FromTemplate returns the configuration of the template's first WebSocket API and
// first HTTP API, with functions named by logical id.
func FromTemplate(t *template.Template) (Config, error) {
	var cfg Config
	if len(t.WebSocketAPIs) > 0 {
		a := t.WebSocketAPIs[0]
		if a.Stage == "" {
			return cfg, fmt.Errorf("websocket api %s: no AWS::ApiGatewayV2::Stage", a.LogicalID)
		}
		ws := &WebSocketAPI{Stage: a.Stage, StageVariables: a.StageVariables,
			RouteSelectionExpression: a.RouteSelectionExpression, Routes: map[string]Route{}}
		for key, r := range a.Routes {
			rt := Route{Function: r.Function, TwoWay: r.TwoWay}
			if r.Authorizer != nil {
				rt.Authorizer = &Authorizer{Function: r.Authorizer.Function, IdentitySource: r.Authorizer.IdentitySource}
			}
			ws.Routes[key] = rt
		}
		cfg.WebSocket = ws
	}
	if len(t.HTTPAPIs) > 0 {
		a := t.HTTPAPIs[0]
		h := &HTTPAPI{Stage: a.Stage, StageVariables: a.StageVariables, CORS: a.CORS}
		for _, r := range a.Routes {
			h.Routes = append(h.Routes, HTTPRoute{Method: r.Method, Path: r.Path, Function: r.Function})
		}
		cfg.HTTP = h
	}
	return cfg, nil
}
