package iampolicy

import (
	"net/url"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// ManagementAPI derives a call to API Gateway's WebSocket management API
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonapigateway.html):
// execute-api:ManageConnections on
// arn:aws:execute-api:<region>:<account>:<apiId>/<stage>/<METHOD>/@connections/<id>.
// The path is /@connections/<id>, or /<stage>/@connections/<id> as the SDK sends it
// to the API's own endpoint.
func ManagementAPI(env Env, apiID, stage string, c Call) ([]identity.Request, error) {
	p := c.URL.EscapedPath()
	rest := strings.TrimPrefix(p, "/"+stage)
	id, ok := strings.CutPrefix(rest, "/@connections/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil, malformed("management API path %q is not /%s/@connections/<id>", p, stage)
	}
	id, err := url.PathUnescape(id)
	if err != nil {
		return nil, malformed("connection id %q: %v", id, err)
	}
	return []identity.Request{ManageConnection(env, c.TLS, apiID, stage, c.Method, id)}, nil
}

// ManageConnection is execute-api:ManageConnections for method on one connection.
func ManageConnection(env Env, tls bool, apiID, stage, method, connectionID string) identity.Request {
	return env.request(tls, "execute-api:ManageConnections",
		env.arn("execute-api", env.Region, env.Account, apiID+"/"+stage+"/"+strings.ToUpper(method)+"/@connections/"+connectionID), nil)
}
