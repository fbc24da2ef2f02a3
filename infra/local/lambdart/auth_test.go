package lambdart_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

func fnARN(name string) string {
	return "arn:aws:lambda:" + region + ":" + account + ":function:" + name
}

func lambdaClient(url string, c identity.Credentials) *lambda.Client {
	var creds aws.CredentialsProvider = aws.AnonymousCredentials{}
	if c.AccessKeyID != "" {
		creds = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	}
	return lambda.New(lambda.Options{Region: region, BaseEndpoint: aws.String(url), Credentials: creds, Retryer: aws.NopRetryer{}})
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// The Invoke API checks every request's signature and authorises
// lambda:InvokeFunction on the function's ARN, qualified when the call names a
// qualifier, before it looks the function up; each refusal is Lambda's own.
func TestRuntime_Handler_InvokeAPI_Auth(t *testing.T) {
	iam := newIAM(t, true,
		identity.Role{Name: "invoker", Policies: []identity.Policy{
			policy("invoker/invoke", allow(`"lambda:InvokeFunction"`, `["`+fnARN("Api")+`","`+fnARN("Api:prod")+`"]`)),
		}},
		identity.Role{Name: "stranger"})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Authority, rt.Authorizer = iam.a, iam.ev
	}, lambdart.Function{Name: "Api"}, lambdart.Function{Name: "Other"})
	srv := httptest.NewServer(h.rt.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()
	invoker, _ := iam.session(t, "invoker", "caller")
	stranger, strangerP := iam.session(t, "stranger", "caller")
	payload := []byte(`{"op":"echo","value":"v"}`)
	invoke := func(c identity.Credentials, in lambda.InvokeInput) (*lambda.InvokeOutput, error) {
		in.Payload = payload
		return lambdaClient(srv.URL, c).Invoke(ctx, &in)
	}

	for _, in := range []lambda.InvokeInput{
		{FunctionName: aws.String("Api")},
		{FunctionName: aws.String(fnARN("Api"))},
		{FunctionName: aws.String("Api"), Qualifier: aws.String("prod")},
		{FunctionName: aws.String("Api:prod")},
	} {
		out, err := invoke(invoker, in)
		if err != nil || !strings.Contains(string(out.Payload), `"value":"v"`) {
			t.Fatalf("allowed invoke of %s (qualifier %q): %v", aws.ToString(in.FunctionName), aws.ToString(in.Qualifier), err)
		}
	}
	if out, err := invoke(invoker, lambda.InvokeInput{FunctionName: aws.String("Api"), InvocationType: types.InvocationTypeEvent}); err != nil || out.StatusCode != http.StatusAccepted {
		t.Fatalf("allowed Event invoke: %v", err)
	}

	denied := []struct {
		creds    identity.Credentials
		in       lambda.InvokeInput
		resource string
	}{
		{invoker, lambda.InvokeInput{FunctionName: aws.String("Api"), Qualifier: aws.String("dev")}, fnARN("Api:dev")},
		{invoker, lambda.InvokeInput{FunctionName: aws.String("Other")}, fnARN("Other")},
		{invoker, lambda.InvokeInput{FunctionName: aws.String("Nope")}, fnARN("Nope")}, // denied before it is found missing
		{stranger, lambda.InvokeInput{FunctionName: aws.String("Api")}, fnARN("Api")},
		{stranger, lambda.InvokeInput{FunctionName: aws.String("Api"), InvocationType: types.InvocationTypeDryRun}, fnARN("Api")},
	}
	for _, d := range denied {
		_, err := invoke(d.creds, d.in)
		if testkit.ErrorCode(err) != "AccessDeniedException" || status(err) != http.StatusForbidden ||
			!strings.Contains(err.Error(), "is not authorized to perform: lambda:InvokeFunction on resource: "+d.resource+" ") {
			t.Fatalf("denied invoke of %s: %v", d.resource, err)
		}
	}
	_, err := invoke(stranger, lambda.InvokeInput{FunctionName: aws.String("Api")})
	if !strings.Contains(err.Error(), "User: "+strangerP.ARN+" is not authorized") {
		t.Fatalf("denial names %v, want %s", err, strangerP.ARN)
	}

	wrongSecret := invoker
	wrongSecret.SecretAccessKey = strings.Repeat("x", 40)
	noToken := invoker
	noToken.SessionToken = ""
	refusals := []struct {
		name  string
		creds identity.Credentials
		code  string
	}{
		{"unsigned", identity.Credentials{}, "MissingAuthenticationTokenException"},
		{"unknown key", identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: invoker.SecretAccessKey, SessionToken: invoker.SessionToken}, "UnrecognizedClientException"},
		{"no session token", noToken, "UnrecognizedClientException"},
		{"tampered signature", wrongSecret, "InvalidSignatureException"},
		{"expired session", iam.expiredSession(t, "invoker"), "ExpiredTokenException"},
	}
	for _, r := range refusals {
		_, err := invoke(r.creds, lambda.InvokeInput{FunctionName: aws.String("Api")})
		if testkit.ErrorCode(err) != r.code || status(err) != http.StatusForbidden {
			t.Errorf("%s: %v (status %d), want %s 403", r.name, err, status(err), r.code)
		}
	}
	// The body is Lambda's REST-JSON error.
	resp, err := http.Post(srv.URL+"/2015-03-31/functions/Api/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-Errortype") != "MissingAuthenticationTokenException" ||
		string(b) != `{"Type":"User","message":"Missing Authentication Token"}` {
		t.Fatalf("unsigned: %d %v %s", resp.StatusCode, resp.Header, b)
	}
}

// signed returns a request signed for the service "lambda" with c, as the SDKs sign
// function URL requests.
func signed(t *testing.T, c identity.Credentials, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID == "" {
		return req
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "lambda", region, time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// An AWS_IAM function URL takes only signed requests of callers allowed both
// lambda:InvokeFunctionUrl and lambda:InvokeFunction (with the URL's condition keys);
// every refusal is a bare 403 Forbidden. The function learns its caller from
// requestContext.authorizer.iam.
func TestRuntime_FunctionURL_IAM(t *testing.T) {
	url := `{"Effect":"Allow","Action":"lambda:InvokeFunctionUrl","Resource":"` + fnARN("Url") + `","Condition":{"StringEquals":{"lambda:FunctionUrlAuthType":"AWS_IAM"}}}`
	viaURL := `{"Effect":"Allow","Action":"lambda:InvokeFunction","Resource":"` + fnARN("Url") + `","Condition":{"Bool":{"lambda:InvokedViaFunctionUrl":"true"}}}`
	iam := newIAM(t, true,
		identity.Role{Name: "caller", Policies: []identity.Policy{policy("caller/url", url, viaURL)}},
		identity.Role{Name: "url-only", Policies: []identity.Policy{policy("url-only/url", url)}},
		identity.Role{Name: "stranger"})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Authority, rt.Authorizer = iam.a, iam.ev
	}, lambdart.Function{Name: "Url", URLAuthType: lambdart.AuthTypeIAM}, lambdart.Function{Name: "Plain"})
	base := h.rt.FunctionURL("Url")
	if !strings.HasPrefix(base, "http://127.0.0.1:") || h.rt.FunctionURL("Plain") != "" || h.rt.FunctionURL("Nope") != "" {
		t.Fatalf("URLs: %q, %q, %q", base, h.rt.FunctionURL("Plain"), h.rt.FunctionURL("Nope"))
	}
	caller, callerP := iam.session(t, "caller", "task-1")
	urlOnly, _ := iam.session(t, "url-only", "task-2")
	stranger, _ := iam.session(t, "stranger", "task-3")

	body := []byte(`{"hello":"url"}`)
	req := signed(t, caller, http.MethodPost, base+"items/a%20b?op=event&x=1&x=2", body)
	req.Header.Set("Cookie", "c1=v1; c2=v2")
	resp, b := do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("allowed caller: %d %s", resp.StatusCode, b)
	}
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("event: %v: %s", err, b)
	}
	rc := ev.RequestContext
	want := events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{AccessKey: caller.AccessKeyID, AccountID: account,
		CallerID: callerP.UserID, UserARN: "arn:aws:sts::" + account + ":assumed-role/caller/task-1", UserID: callerP.UserID}
	if rc.Authorizer == nil || rc.Authorizer.IAM == nil || *rc.Authorizer.IAM != want {
		t.Fatalf("authorizer = %+v, want %+v", rc.Authorizer, want)
	}
	if ev.Version != "2.0" || ev.RawPath != "/items/a%20b" || ev.RawQueryString != "op=event&x=1&x=2" ||
		ev.QueryStringParameters["x"] != "1,2" || ev.Body != string(body) || ev.IsBase64Encoded ||
		len(ev.Cookies) != 2 || ev.Cookies[1] != "c2=v2" || rc.HTTP.Method != "POST" || rc.HTTP.SourceIP != "127.0.0.1" ||
		rc.APIID == "" || rc.DomainPrefix != rc.APIID || rc.RequestID == "" || rc.TimeEpoch == 0 || ev.Headers["x-amz-date"] == "" {
		t.Fatalf("event = %s", b)
	}
	for _, secret := range []string{"authorization", "x-amz-security-token"} {
		if _, ok := ev.Headers[secret]; ok {
			t.Errorf("the event carries the caller's %s header", secret)
		}
	}

	wrongSecret := caller
	wrongSecret.SecretAccessKey = strings.Repeat("x", 40)
	refused := []struct {
		name string
		req  *http.Request
	}{
		{"unsigned", signed(t, identity.Credentials{}, http.MethodGet, base, nil)},
		{"unknown key", signed(t, identity.Credentials{AccessKeyID: "ASIAUNKNOWNUNKNOWN00", SecretAccessKey: "x", SessionToken: "y"}, http.MethodGet, base, nil)},
		{"tampered signature", signed(t, wrongSecret, http.MethodGet, base, nil)},
		{"expired session", signed(t, iam.expiredSession(t, "caller"), http.MethodGet, base, nil)},
		{"only lambda:InvokeFunctionUrl", signed(t, urlOnly, http.MethodGet, base, nil)},
		{"no policy", signed(t, stranger, http.MethodGet, base, nil)},
	}
	tampered := signed(t, caller, http.MethodPost, base, []byte("signed"))
	tampered.Body = io.NopCloser(strings.NewReader("sent!!"))
	refused = append(refused, struct {
		name string
		req  *http.Request
	}{"tampered body", tampered})
	for _, r := range refused {
		resp, b := do(t, r.req)
		if resp.StatusCode != http.StatusForbidden || string(b) != `{"Message":"Forbidden"}` {
			t.Errorf("%s: %d %s, want 403 Forbidden", r.name, resp.StatusCode, b)
		}
	}
}

// A NONE function URL takes any request; the function's response is mapped as Lambda
// maps it: a statusCode response with its headers, cookies and base64 body, other
// JSON as a 200 application/json body, a function error as 502.
func TestRuntime_FunctionURL_NoneAndResponses(t *testing.T) {
	iam := newIAM(t, false)
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) { rt.Authority = iam.a },
		lambdart.Function{Name: "Open", URLAuthType: lambdart.AuthTypeNone})
	base := h.rt.FunctionURL("Open")
	resp, b := do(t, signed(t, identity.Credentials{}, http.MethodPut, base+"?op=event", []byte{0xff, 0xfe}))
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(b, &ev); err != nil || resp.StatusCode != 200 {
		t.Fatalf("unsigned request: %d %s", resp.StatusCode, b)
	}
	if ev.RequestContext.Authorizer != nil || ev.RequestContext.AccountID != "anonymous" || !ev.IsBase64Encoded ||
		ev.Body != base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}) || ev.RequestContext.HTTP.Method != "PUT" {
		t.Fatalf("event = %s", b)
	}
	resp, b = do(t, signed(t, identity.Credentials{}, http.MethodGet, base+"?op=custom", nil))
	if resp.StatusCode != 201 || !bytes.Equal(b, []byte{0, 1, 2, 255}) || resp.Header.Get("X-Custom") != "yes" ||
		resp.Header.Get("Content-Type") != "application/octet-stream" || len(resp.Header.Values("Set-Cookie")) != 2 {
		t.Fatalf("custom response: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	resp, b = do(t, signed(t, identity.Credentials{}, http.MethodGet, base+"?op=plain", nil))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || string(b) != `{"hello":"world"}` {
		t.Fatalf("plain response: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, b = do(t, signed(t, identity.Credentials{}, http.MethodGet, base+"?op=fail", nil))
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("function error: %d %s", resp.StatusCode, b)
	}
}
