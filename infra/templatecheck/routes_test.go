package templatecheck_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
)

// Every WebSocket route reaches a function through a Lambda proxy integration, and API
// Gateway may invoke that function for exactly that route: the permission's SourceArn
// must match the ARN API Gateway invokes with.
func TestWebSocket_RoutesReachFunctions(t *testing.T) {
	tpl, _ := loadModel(t, scenarios[0])
	raw := loadRaw(t, templatePath, scenarios[0])
	if len(tpl.WebSocketAPIs) != 1 {
		t.Fatalf("want one WebSocket API, got %d", len(tpl.WebSocketAPIs))
	}
	ws := tpl.WebSocketAPIs[0]
	if ws.RouteSelectionExpression != "$request.body.action" {
		t.Errorf("route selection %q", ws.RouteSelectionExpression)
	}
	want := map[string]string{"$connect": "ConnectFunction", "$default": "MessageFunction", "$disconnect": "DisconnectFunction"}
	got := map[string]string{}
	for key, r := range ws.Routes {
		got[key] = r.Function
		if r.IntegrationType != "AWS_PROXY" || tpl.Functions[r.Function] == nil {
			t.Errorf("route %s: integration %s to %q, want AWS_PROXY to a function of the template", key, r.IntegrationType, r.Function)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}

	perms := raw.ofType(t, "AWS::Lambda::Permission")
	// invokes reports whether some permission lets API Gateway invoke fn with sourceArn.
	invokes := func(fn, sourceArn string) bool {
		for _, p := range perms {
			if refersTo(template.Lookup(p.Properties, "FunctionName"), fn) &&
				raw.str(t, template.Lookup(p.Properties, "Principal")) == "apigateway.amazonaws.com" &&
				raw.str(t, template.Lookup(p.Properties, "Action")) == "lambda:InvokeFunction" &&
				glob(raw.str(t, template.Lookup(p.Properties, "SourceArn")), sourceArn) {
				return true
			}
		}
		return false
	}
	const api = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}"
	for key, r := range ws.Routes {
		if !invokes(r.Function, api+"/${StageName}/"+key) {
			t.Errorf("route %s: no Lambda permission lets API Gateway invoke %s for %s/${StageName}/%s", key, r.Function, api, key)
		}
		// Another API or stage must not reach it.
		if invokes(r.Function, strings.Replace(api, "${WebSocketApi}", "otherapi", 1)+"/${StageName}/"+key) {
			t.Errorf("route %s: the permission for %s is not limited to this API", key, r.Function)
		}
	}
	a := ws.Routes["$connect"].Authorizer
	if a == nil || a.Type != "REQUEST" || a.Function != "AuthorizeFunction" ||
		!reflect.DeepEqual(a.IdentitySource, []string{"route.request.querystring.userId", "route.request.querystring.exp", "route.request.querystring.sig"}) {
		t.Fatalf("$connect authorizer = %+v", a)
	}
	if !invokes("AuthorizeFunction", api+"/authorizers/${"+a.LogicalID+"}") {
		t.Errorf("no Lambda permission lets API Gateway invoke the authorizer")
	}
	for key, r := range ws.Routes {
		if key != "$connect" && r.Authorizer != nil {
			t.Errorf("route %s has an authorizer; WebSocket authorizers run on $connect only", key)
		}
	}
	// Every permission of API Gateway's belongs to a route or the authorizer: nothing
	// else may invoke. (EventBridge's is TestTaskEvents_Route's.)
	for _, p := range perms {
		if raw.str(t, template.Lookup(p.Properties, "Principal")) != "apigateway.amazonaws.com" {
			continue
		}
		ok := refersTo(template.Lookup(p.Properties, "FunctionName"), "AuthorizeFunction")
		for _, r := range ws.Routes {
			ok = ok || refersTo(template.Lookup(p.Properties, "FunctionName"), r.Function)
		}
		if !ok {
			t.Errorf("permission %s grants a function that no route uses", p.LogicalID)
		}
	}

	// A deployment made before a route exists deploys without it.
	deps := set()
	for _, d := range raw.ofType(t, "AWS::ApiGatewayV2::Deployment") {
		for _, id := range d.DependsOn {
			deps[id] = true
		}
	}
	for _, r := range raw.ofType(t, "AWS::ApiGatewayV2::Route") {
		if !deps[r.LogicalID] {
			t.Errorf("the WebSocket deployment does not depend on route %s", r.LogicalID)
		}
	}
	stages := raw.ofType(t, "AWS::ApiGatewayV2::Stage")
	if len(stages) != 1 {
		t.Fatalf("want one WebSocket stage, got %d", len(stages))
	}
	st := raw.render(t, stages[0].Properties).(map[string]any)
	drs, _ := st["DefaultRouteSettings"].(map[string]any)
	if st["StageName"] != "${StageName}" || drs["ThrottlingRateLimit"] == nil || drs["ThrottlingBurstLimit"] == nil {
		t.Errorf("stage %v: want StageName from the parameter and throttling", st)
	}
	als, _ := st["AccessLogSettings"].(map[string]any)
	format, _ := als["Format"].(string)
	if als["DestinationArn"] == nil || !strings.Contains(format, "$context.requestId") {
		t.Errorf("stage access logs = %v, want a destination and a format with $context.requestId", als)
	}
	// The query string carries the signature: it must not reach a log.
	if strings.Contains(strings.ToLower(format), "querystring") {
		t.Errorf("access log format includes the query string")
	}
}

// The HTTP API serves exactly GET /status and POST /prewarm, each with a function.
func TestHTTPAPI_Routes(t *testing.T) {
	tpl, _ := loadModel(t, scenarios[0])
	if len(tpl.HTTPAPIs) != 1 {
		t.Fatalf("want one HTTP API, got %d", len(tpl.HTTPAPIs))
	}
	h := tpl.HTTPAPIs[0]
	got := map[string]string{}
	for _, r := range h.Routes {
		got[r.Key()] = r.Function
		if tpl.Functions[r.Function] == nil {
			t.Errorf("route %s: no function %s", r.Key(), r.Function)
		}
	}
	want := map[string]string{"GET /status": "StatusFunction", "POST /prewarm": "PrewarmFunction",
		"POST /webhooks/clerk": "WebhookFunction"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("HTTP routes = %v, want %v", got, want)
	}
	if h.Stage != "prod" {
		t.Errorf("HTTP API stage = %q, want the StageName default prod", h.Stage)
	}
}
