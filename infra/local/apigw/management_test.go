package apigw_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func errorMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

// Each way a management API request's signature can be wrong gets the service's own
// 403, as the SDK parses it; the connection is not touched.
func TestServer_Management_SignatureRefusals(t *testing.T) {
	st := newStack(t)
	c, connID := st.connect(t, "user=alice")
	ctx := context.Background()
	wrong := st.creds
	wrong.SecretAccessKey = strings.Repeat("x", 40)
	noToken := st.creds
	noToken.SessionToken = ""
	st.clock.Advance(-2 * identity.DefaultSessionDuration)
	expired := st.session(t, "gateway")
	st.clock.Advance(2 * identity.DefaultSessionDuration)
	cases := []struct {
		name  string
		creds identity.Credentials
		code  string
		msg   string
	}{
		// The SDK's ForbiddenException has no message member: the raw body is checked below.
		{"unsigned", identity.Credentials{}, "ForbiddenException", ""},
		{"unknown key", identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: "x", SessionToken: "y"}, "UnrecognizedClientException", "The security token included in the request is invalid."},
		{"no session token", noToken, "UnrecognizedClientException", "The security token included in the request is invalid."},
		{"tampered signature", wrong, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."},
		{"expired session", expired, "ExpiredTokenException", "The security token included in the request is expired"},
	}
	for _, tc := range cases {
		cl := st.client(t, st.srv.ManagementEndpoint(), tc.creds)
		for op, call := range map[string]func() error{
			"POST": func() error {
				_, err := cl.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("x")})
				return err
			},
			"GET": func() error {
				_, err := cl.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &connID})
				return err
			},
			"DELETE": func() error {
				_, err := cl.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: &connID})
				return err
			},
		} {
			err := call()
			if testkit.ErrorCode(err) != tc.code || httpStatus(err) != http.StatusForbidden || !strings.HasPrefix(errorMessage(err), tc.msg) {
				t.Errorf("%s %s: %v (status %d), want %s 403 %q", tc.name, op, err, httpStatus(err), tc.code, tc.msg)
			}
		}
	}
	// Nothing reached the connection: it is open and has received nothing.
	if _, err := st.mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, testkit.Wait)
	defer cancel()
	if _, b, err := c.Read(rctx); err != nil || string(b) != "first" {
		t.Fatalf("client read %q, %v; want the first accepted post", b, err)
	}
	// The raw answer to an unsigned request, as API Gateway writes it.
	resp, err := http.Post(st.srv.ManagementEndpoint()+"/@connections/"+connID, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-Errortype") != "ForbiddenException" || string(b) != `{"message":"Missing Authentication Token"}` {
		t.Fatalf("unsigned: %d %v %s", resp.StatusCode, resp.Header, b)
	}
}

// Every management API call is authorised as execute-api:ManageConnections on the
// connection's ARN with the call's method; a denial is AccessDeniedException naming
// the caller, the action and that ARN, decided before the connection is looked up
// (so a denied caller gets 403, not 410, for an unknown connection).
func TestServer_Management_Authorization(t *testing.T) {
	ev := iampolicy.StartForTest(t, iampolicy.Options{Logger: (&testkit.Logs{}).Logger()})
	st := newStack(t, func(s *apigw.Server, _ map[string]lambdart.Function) { s.Authorizer = ev })
	// The fixture functions answer through the management API with their own
	// session, which the gateway role allows.
	c, connID := st.connect(t, "user=alice")
	ctx := context.Background()
	poster := st.client(t, st.srv.ManagementEndpoint(), st.session(t, "poster"))
	strangerCreds := st.session(t, "stranger")
	stranger := st.client(t, st.srv.ManagementEndpoint(), strangerCreds)

	if _, err := poster.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("posted")}); err != nil {
		t.Fatalf("poster's post: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, testkit.Wait)
	defer cancel()
	if _, b, err := c.Read(rctx); err != nil || string(b) != "posted" {
		t.Fatalf("client read %q, %v", b, err)
	}
	resource := func(method, id string) string {
		return ":" + apiID + "/test/" + method + "/@connections/" + id
	}
	denied := func(name string, err error, who, method, id string) {
		t.Helper()
		msg := errorMessage(err)
		if testkit.ErrorCode(err) != "AccessDeniedException" || httpStatus(err) != http.StatusForbidden ||
			!strings.HasPrefix(msg, "User: arn:aws:sts::"+account+":assumed-role/"+who+"/"+who+"-session is not authorized to perform: execute-api:ManageConnections on resource: arn:aws:execute-api:"+region+":"+account+resource(method, id)) {
			t.Fatalf("%s: %v, want AccessDeniedException on %s", name, err, resource(method, id))
		}
	}
	_, err := poster.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &connID})
	denied("poster's GetConnection", err, "poster", "GET", connID)
	_, err = poster.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: &connID})
	denied("poster's DeleteConnection", err, "poster", "DELETE", connID)
	_, err = stranger.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &connID, Data: []byte("x")})
	denied("stranger's post", err, "stranger", "POST", connID)

	unknown := "AAAAAAAAAAAAAAA="
	var gone *types.GoneException
	if _, err := poster.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &unknown, Data: []byte("x")}); !errors.As(err, &gone) {
		t.Fatalf("allowed post to an unknown connection: %v, want GoneException", err)
	}
	_, err = stranger.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: &unknown, Data: []byte("x")})
	denied("stranger's post to an unknown connection", err, "stranger", "POST", unknown)

	if _, err := st.mgmt.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: &connID}); err != nil {
		t.Fatalf("gateway's delete: %v", err)
	}
	if _, err := st.mgmt.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(connID)}); !errors.As(err, &gone) {
		t.Fatalf("after delete: %v, want GoneException", err)
	}
}
