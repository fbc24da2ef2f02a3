package stack

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// SAMEnvFile is the file, under the stack's root, that `make dev` writes for `sam local
// invoke --env-vars` and `make invoke`: every function's environment as the local stack
// runs it.
const SAMEnvFile = "sam-env.json"

// endpointVariable is the one endpoint variable the template declares (empty) for every
// function. SAM CLI sets in a function's container only the variables its template
// declares, so the per-service AWS_ENDPOINT_URL_<SERVICE> the stack gives its own
// functions cannot reach a `sam local invoke`; this one can, and the stack answers it
// with a front that routes each request by the service its signature names. Empty, as
// deployed, the SDKs ignore it.
const endpointVariable = "AWS_ENDPOINT_URL"

// serviceEndpoints maps the service name in a SigV4 credential scope to the endpoint
// variable of the emulator that serves it.
var serviceEndpoints = map[string]string{
	"dynamodb":       "AWS_ENDPOINT_URL_DYNAMODB",
	"s3":             "AWS_ENDPOINT_URL_S3",
	"ecs":            "AWS_ENDPOINT_URL_ECS",
	"lambda":         "AWS_ENDPOINT_URL_LAMBDA",
	"sts":            "AWS_ENDPOINT_URL_STS",
	"secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
}

// startAWSEndpoint serves one address for every emulated service. A request goes,
// untouched (its Host header included, so its signature still verifies), to the emulator
// of the service its credential scope names; the emulator checks the signature and the
// caller's policies as it does for direct callers.
func (s *Stack) startAWSEndpoint() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("aws endpoint: %w", err)
	}
	targets := map[string]*httputil.ReverseProxy{}
	for svc, variable := range serviceEndpoints {
		raw := s.Endpoints[variable]
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			ln.Close()
			return fmt.Errorf("aws endpoint: %s: %w", variable, err)
		}
		targets[svc] = httputil.NewSingleHostReverseProxy(u)
	}
	s.awsEndpoint = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svc := signedService(r)
		p := targets[svc]
		if p == nil {
			msg := "the local stack's AWS endpoint routes SigV4-signed requests by the service their credential scope names"
			if svc != "" {
				msg = fmt.Sprintf("the local stack emulates no service %q", svc)
			}
			http.Error(w, msg, http.StatusBadRequest)
			return
		}
		p.ServeHTTP(w, r)
	})}
	go s.awsEndpoint.Serve(ln)
	s.AWSEndpoint = "http://" + ln.Addr().String()
	return nil
}

// signedService is the service named by a request's SigV4 credential scope
// (<key>/<date>/<region>/<service>/aws4_request), from its Authorization header or a
// presigned query; empty when it has none.
func signedService(r *http.Request) string {
	cred := r.URL.Query().Get("X-Amz-Credential")
	if h := r.Header.Get("Authorization"); h != "" {
		_, rest, ok := strings.Cut(h, "Credential=")
		if !ok {
			return ""
		}
		cred, _, _ = strings.Cut(rest, ",")
	}
	parts := strings.Split(strings.TrimSpace(cred), "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return ""
	}
	return parts[3]
}

// SAMEnv returns an env-vars file for `sam local invoke --env-vars`: for each function, by
// logical id, the values the stack runs it with — the template's variables resolved
// locally, and the one endpoint variable pointing at the stack's AWS endpoint. SAM CLI
// applies only variables the template declares, so nothing else is listed. Secrets are
// not in it: the functions read them from the local Secrets Manager, as on AWS.
func (s *Stack) SAMEnv() ([]byte, error) {
	out := map[string]map[string]string{}
	ids := make([]string, 0, len(s.functionEnv))
	for id := range s.functionEnv {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		vars := map[string]string{}
		for k, v := range s.functionEnv[id] {
			if _, declared := s.Template.Functions[id].Environment[k]; declared {
				vars[k] = v
			}
		}
		if _, declared := s.Template.Functions[id].Environment[endpointVariable]; declared {
			vars[endpointVariable] = s.AWSEndpoint
		}
		out[id] = vars
	}
	return json.MarshalIndent(out, "", "  ")
}

// WriteSAMEnv writes SAMEnv to path, readable by its owner only (it names the stack's
// endpoints, not its keys, but lives beside aws.env).
func (s *Stack) WriteSAMEnv(path string) error {
	b, err := s.SAMEnv()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// LocalParams are the template parameters the local stack runs with, extra over them:
// what a tool that loads the template outside a stack (make invoke) needs for the
// parameters that have no default.
func LocalParams(extra map[string]string) map[string]string {
	return localParams(StackName+"-bucket", nil, extra)
}
