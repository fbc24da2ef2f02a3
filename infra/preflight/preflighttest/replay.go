package preflighttest

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Content types of the protocols the replayed services speak.
const (
	// ContentXML is the Query protocols' (IAM, STS, EC2) and S3's.
	ContentXML = "text/xml"
	// ContentJSON11 is the AWS JSON 1.1 protocol's (ECR, Service Quotas, Secrets Manager).
	ContentJSON11 = "application/x-amz-json-1.1"
	// ContentJSON is the REST-JSON protocol's (Lambda).
	ContentJSON = "application/json"
)

// Endpoint in an answer's body is replaced with the address the call was made to, so
// an answer can hand out addresses of the same server (ECR's layer download URL).
const Endpoint = "{{endpoint}}"

// BlobPath is where the server serves an image configuration blob (Op "ecr:blob").
const BlobPath = "/blob/"

// Answer is one recorded response.
type Answer struct {
	Status int
	// ContentType defaults to the service's protocol's.
	ContentType string
	Header      map[string]string
	Body        string
}

// Replay holds the answers a test's AWS calls get, by "service:Operation"
// (iam:GetRole, ecr:DescribeImages, s3:GetPublicAccessBlock, …), and records every
// call. Safe for concurrent use.
type Replay struct {
	mu      sync.Mutex
	answers map[string]Answer
	calls   []string
}

// NewReplay returns a Replay with answers.
func NewReplay(answers map[string]Answer) *Replay {
	r := &Replay{answers: map[string]Answer{}}
	for op, a := range answers {
		r.answers[op] = a
	}
	return r
}

// Set records the answer to op, replacing any other.
func (r *Replay) Set(op string, a Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[op] = a
}

// Override sets op's answer for the rest of the test (or subtest) tb, then restores
// the one before (or none).
func (r *Replay) Override(tb testing.TB, op string, a Answer) {
	tb.Helper()
	r.mu.Lock()
	prev, had := r.answers[op]
	r.answers[op] = a
	r.mu.Unlock()
	tb.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if had {
			r.answers[op] = prev
		} else {
			delete(r.answers, op)
		}
	})
}

// Delete forgets op's answer: an emulator serves it again, or the call fails.
func (r *Replay) Delete(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.answers, op)
}

// Calls returns the operations called so far, in order.
func (r *Replay) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// Reset forgets the calls made so far.
func (r *Replay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = nil
}

func (r *Replay) record(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, op)
}

func (r *Replay) answer(op string) (Answer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.answers[op]
	return a, ok
}

// write sends a as the answer to a call of service.
func (a Answer) write(w http.ResponseWriter, r *http.Request, service string) {
	ct := a.ContentType
	if ct == "" {
		ct = contentTypes[service]
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Amzn-RequestId", "0f9b5c3e-7a1d-4c2e-9b8f-3d6a1e2c4b5a")
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	status := a.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(strings.ReplaceAll(a.Body, Endpoint, "http://"+r.Host)))
	}
}

var contentTypes = map[string]string{
	"iam": ContentXML, "sts": ContentXML, "ec2": ContentXML, "s3": "application/xml",
	"ecr": ContentJSON11, "servicequotas": ContentJSON11, "secretsmanager": ContentJSON11,
	"lambda": ContentJSON,
}

// signingService is the service in a SigV4 Authorization header's credential scope
// (Credential=AKID/date/region/service/aws4_request).
func signingService(r *http.Request) string {
	_, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if !ok {
		return ""
	}
	cred, _, _ = strings.Cut(cred, ",")
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return ""
	}
	return parts[3]
}

// operation names the call r makes of service, as the API reference names it.
func operation(service string, r *http.Request, body []byte) string {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		_, op, _ := strings.Cut(t, ".")
		return op
	}
	switch service {
	case "iam", "sts", "ec2":
		form, _ := url.ParseQuery(string(body))
		if a := form.Get("Action"); a != "" {
			return a
		}
		return r.URL.Query().Get("Action")
	case "lambda":
		if r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/2016-08-19/account-settings" {
			return "GetAccountSettings"
		}
	case "s3":
		q := r.URL.Query()
		bucketOnly := strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0
		switch {
		case q.Has("publicAccessBlock") && r.Method == http.MethodGet:
			return "GetPublicAccessBlock"
		case q.Has("versioning") && r.Method == http.MethodGet:
			return "GetBucketVersioning"
		case q.Has("versioning") && r.Method == http.MethodPut:
			return "PutBucketVersioning"
		case bucketOnly && r.Method == http.MethodHead:
			return "HeadBucket"
		case bucketOnly && r.Method == http.MethodPut:
			return "CreateBucket"
		case bucketOnly && r.Method == http.MethodGet:
			return "ListObjects"
		case r.Method == http.MethodGet:
			return "GetObject"
		case r.Method == http.MethodPut:
			return "PutObject"
		}
	}
	return r.Method + " " + r.URL.Path
}

// ReadOnly reports whether every operation in calls only reads.
func ReadOnly(calls []string) (bool, []string) {
	var writes []string
	for _, c := range calls {
		_, op, _ := strings.Cut(c, ":")
		if !(strings.HasPrefix(op, "Get") || strings.HasPrefix(op, "Describe") || strings.HasPrefix(op, "Head") ||
			strings.HasPrefix(op, "BatchGet") || strings.HasPrefix(op, "List") || op == "blob") {
			writes = append(writes, c)
		}
	}
	sort.Strings(writes)
	return len(writes) == 0, writes
}

// QueryError is an error of a Query protocol service (IAM, STS): the ErrorResponse
// document (https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html,
// https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html).
func QueryError(status int, namespace, code, message string) Answer {
	return Answer{Status: status, Body: fmt.Sprintf(`<ErrorResponse xmlns="%s">
  <Error>
    <Type>Sender</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>0f9b5c3e-7a1d-4c2e-9b8f-3d6a1e2c4b5a</RequestId>
</ErrorResponse>`, namespace, code, message)}
}

// EC2Error is an EC2 API error: Response/Errors/Error
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html#api-error-response).
func EC2Error(status int, code, message string) Answer {
	return Answer{Status: status, Body: fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>0f9b5c3e-7a1d-4c2e-9b8f-3d6a1e2c4b5a</RequestID></Response>`, code, message)}
}

// JSONError is an error of an AWS JSON protocol service (ECR, Service Quotas,
// Secrets Manager): the code in __type
// (https://smithy.io/2.0/aws/protocols/aws-json-1_1-protocol.html#operation-error-serialization).
func JSONError(status int, code, message string) Answer {
	return Answer{Status: status, Header: map[string]string{"X-Amzn-ErrorType": code},
		Body: fmt.Sprintf(`{"__type":%q,"message":%q}`, code, message)}
}

// RESTJSONError is an error of a REST-JSON service (Lambda): the code in
// X-Amzn-ErrorType (https://docs.aws.amazon.com/lambda/latest/api/CommonErrors.html).
func RESTJSONError(status int, code, message string) Answer {
	return Answer{Status: status, Header: map[string]string{"X-Amzn-ErrorType": code},
		Body: fmt.Sprintf(`{"Type":"User","Message":%q}`, message)}
}

// S3Error is an S3 error document (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#RESTErrorResponses).
func S3Error(status int, code, message string) Answer {
	return Answer{Status: status, Body: fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>%s</Code><Message>%s</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>`, code, message)}
}
