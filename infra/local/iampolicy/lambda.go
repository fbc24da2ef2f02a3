package iampolicy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// Lambda condition keys.
const (
	keyFunctionURLAuthType   = "lambda:FunctionUrlAuthType"
	keyInvokedViaFunctionURL = "lambda:InvokedViaFunctionUrl"
)

// Lambda derives what a Lambda API call asks (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html):
// Invoke (POST /2015-03-31/functions/<name>/invocations) needs lambda:InvokeFunction
// on the function's ARN, qualified when the call names a qualifier (?Qualifier= or
// name:qualifier); InvokeAsync lambda:InvokeAsync; GetFunction lambda:GetFunction;
// ListFunctions lambda:ListFunctions on "*"; PutFunctionConcurrency (PUT
// /2017-10-31/functions/<name>/concurrency), DeleteFunctionConcurrency (DELETE, the
// same path) and GetFunctionConcurrency (GET /2019-09-30/…/concurrency) the action of
// their name on the unqualified function.
func Lambda(env Env, c Call) ([]identity.Request, error) {
	p := c.URL.EscapedPath()
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(segs) >= 2 && segs[1] == "functions" && (len(segs) == 2 || segs[2] == "") && c.Method == http.MethodGet {
		return []identity.Request{env.request(c.TLS, "lambda:ListFunctions", "*", nil)}, nil
	}
	if len(segs) < 3 || segs[1] != "functions" || segs[2] == "" {
		return nil, unsupported("lambda:?", "*", "the local stack does not derive Lambda %s %s", c.Method, p)
	}
	name, err := url.PathUnescape(segs[2])
	if err != nil {
		return nil, malformed("function name %q: %v", segs[2], err)
	}
	rest := strings.Join(segs[3:], "/")
	qualifier := c.URL.Query().Get("Qualifier")
	switch {
	case c.Method == http.MethodPost && segs[0] == "2015-03-31" && rest == "invocations":
		return []identity.Request{LambdaInvoke(env, c.TLS, name, qualifier)}, nil
	case c.Method == http.MethodPost && segs[0] == "2014-11-13" && strings.TrimSuffix(rest, "/") == "invoke-async":
		r := LambdaInvoke(env, c.TLS, name, "")
		r.Action = "lambda:InvokeAsync"
		return []identity.Request{r}, nil
	case c.Method == http.MethodGet && rest == "":
		r := LambdaInvoke(env, c.TLS, name, qualifier)
		r.Action = "lambda:GetFunction"
		return []identity.Request{r}, nil
	case rest == "concurrency" && (segs[0] == "2017-10-31" && (c.Method == http.MethodPut || c.Method == http.MethodDelete) ||
		segs[0] == "2019-09-30" && c.Method == http.MethodGet):
		// Reserved concurrency belongs to the function, never to a version or alias.
		r := LambdaInvoke(env, c.TLS, functionName(name), "")
		r.Action = map[string]string{http.MethodPut: "lambda:PutFunctionConcurrency",
			http.MethodDelete: "lambda:DeleteFunctionConcurrency", http.MethodGet: "lambda:GetFunctionConcurrency"}[c.Method]
		return []identity.Request{r}, nil
	}
	return nil, unsupported("lambda:?", functionARN(env, name, qualifier), "the local stack does not derive Lambda %s %s", c.Method, p)
}

// LambdaInvoke is lambda:InvokeFunction on function (a name, name:qualifier, a
// partial or full ARN), qualified by qualifier when set: what Lambda Invoke, an
// asynchronous invocation or the scheduler's target call asks.
func LambdaInvoke(env Env, tls bool, function, qualifier string) identity.Request {
	return env.request(tls, "lambda:InvokeFunction", functionARN(env, function, qualifier), nil)
}

// LambdaFunctionURL derives a function URL request: lambda:InvokeFunctionUrl with
// lambda:FunctionUrlAuthType (AWS_IAM or NONE), and, as Lambda requires of function
// URLs since October 2025, lambda:InvokeFunction with lambda:InvokedViaFunctionUrl=true.
func LambdaFunctionURL(env Env, tls bool, function, qualifier, authType string) []identity.Request {
	arn := functionARN(env, function, qualifier)
	return []identity.Request{
		env.request(tls, "lambda:InvokeFunctionUrl", arn, map[string][]string{keyFunctionURLAuthType: {authType}}),
		env.request(tls, "lambda:InvokeFunction", arn, map[string][]string{keyInvokedViaFunctionURL: {"true"}}),
	}
}

// functionARN resolves a FunctionName parameter to the ARN IAM sees.
func functionARN(env Env, function, qualifier string) string {
	var arn string
	switch {
	case strings.HasPrefix(function, "arn:"):
		arn = function
	case strings.Contains(function, ":function:"): // 123456789012:function:name
		arn = "arn:" + env.partition() + ":lambda:" + env.Region + ":" + function
	default:
		arn = env.arn("lambda", env.Region, env.Account, "function:"+function)
	}
	if qualifier != "" && strings.Count(arn, ":") == 6 {
		arn += ":" + qualifier
	}
	return arn
}

// functionName strips a qualifier (name:qualifier) from a function name; an ARN stays
// whole, less a qualifier after its seventh field.
func functionName(s string) string {
	if strings.HasPrefix(s, "arn:") {
		parts := strings.SplitN(s, ":", 8)
		return strings.Join(parts[:min(len(parts), 7)], ":")
	}
	if strings.Contains(s, ":function:") { // 123456789012:function:name[:qualifier]
		parts := strings.SplitN(s, ":", 4)
		return strings.Join(parts[:min(len(parts), 3)], ":")
	}
	name, _, _ := strings.Cut(s, ":")
	return name
}
