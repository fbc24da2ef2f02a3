package preflight_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/preflight"
)

func sampleReport() *preflight.Report {
	return &preflight.Report{Account: "123456789012", Region: "eu-west-1", Sources: []string{"-parameter-overrides", "template.yaml defaults"},
		Results: []preflight.Result{
			{Check: preflight.CheckCredentials, Status: preflight.OK, Summary: "arn:aws:iam::123456789012:user/alice"},
			{Check: preflight.CheckServiceLinkedRole, Status: preflight.Fail, Summary: "AWSServiceRoleForECS does not exist",
				Fix: "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com"},
			{Check: preflight.CheckLambdaConcurrency, Status: preflight.Warn, Summary: "10 concurrent executions", Details: []string{"new accounts start at 10"}},
			{Check: preflight.CheckStorageCredentials, Status: preflight.Skip, Summary: "AWS S3"},
		}}
}

// A line per check (status, name, summary), its details and fix indented under it,
// and the count last.
func TestReport_WriteText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `sandgate preflight: account 123456789012, region eu-west-1
parameters: -parameter-overrides, then template.yaml defaults

OK    credentials              arn:aws:iam::123456789012:user/alice
FAIL  ecs-service-linked-role  AWSServiceRoleForECS does not exist
                               fix: aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com
WARN  lambda-concurrency       10 concurrent executions
                               new accounts start at 10
SKIP  storage-credentials      AWS S3

1 of 4 checks failed, 1 warning: fix them before sam deploy.
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// One JSON document: the run, every check with its status, and the verdict.
func TestReport_WriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Account, Region string
		Sources         []string `json:"parameterSources"`
		Checks          []struct {
			Check, Status, Summary, Fix string
			Details                     []string
		}
		Failed int
		OK     bool
	}
	dec := json.NewDecoder(strings.NewReader(b.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v in %s", err, b.String())
	}
	if got.Account != "123456789012" || got.Region != "eu-west-1" || len(got.Sources) != 2 || got.Failed != 1 || got.OK || len(got.Checks) != 4 {
		t.Fatalf("got %+v", got)
	}
	if c := got.Checks[1]; c.Check != "ecs-service-linked-role" || c.Status != "fail" || !strings.HasPrefix(c.Fix, "aws iam create-service-linked-role") {
		t.Fatalf("check %+v", c)
	}
	if c := got.Checks[2]; c.Status != "warn" || len(c.Details) != 1 {
		t.Fatalf("check %+v", c)
	}
}
