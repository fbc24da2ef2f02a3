package preflight

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Status is a check's outcome.
type Status string

// Outcomes. Only Fail makes the run fail: Warn is advice, Skip a check that did not
// apply or could not run for want of an earlier one.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Names of the checks, in the order they are reported.
const (
	CheckParameters         = "parameters"
	CheckCredentials        = "credentials"
	CheckServiceLinkedRole  = "ecs-service-linked-role"
	CheckSigningSecret      = "signing-secret"
	CheckStorageCredentials = "storage-credentials"
	CheckSandboxImage       = "sandbox-image"
	CheckSubnets            = "subnets"
	CheckBucket             = "bucket"
	CheckLambdaConcurrency  = "lambda-concurrency"
	CheckFargate            = "fargate-vcpu"
)

// Result is one check's outcome: a one-line summary, for a problem a one-line fix, and
// supporting lines. Nothing in a result is a secret's value.
type Result struct {
	Check   string   `json:"check"`
	Status  Status   `json:"status"`
	Summary string   `json:"summary"`
	Fix     string   `json:"fix,omitempty"`
	Details []string `json:"details,omitempty"`
}

// Report is a whole run.
type Report struct {
	// Account and Caller are the credentials' account and ARN, when they worked.
	Account string `json:"account,omitempty"`
	Caller  string `json:"caller,omitempty"`
	Region  string `json:"region"`
	// Sources says where the parameters came from, most specific first.
	Sources []string `json:"parameterSources,omitempty"`
	Results []Result `json:"checks"`
}

// Failed counts the failed checks.
func (r *Report) Failed() int { return r.count(Fail) }

func (r *Report) count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		*Report
		Failed int  `json:"failed"`
		OK     bool `json:"ok"`
	}{r, r.Failed(), r.Failed() == 0})
}

// WriteText writes the report for a terminal: a line per check, its fix and details
// indented under it, and a last line with the counts.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sandgate preflight: ")
	if r.Account != "" {
		fmt.Fprintf(&b, "account %s, ", r.Account)
	}
	region := r.Region
	if region == "" {
		region = "(none)"
	}
	fmt.Fprintf(&b, "region %s\n", region)
	if len(r.Sources) > 0 {
		fmt.Fprintf(&b, "parameters: %s\n", strings.Join(r.Sources, ", then "))
	}
	b.WriteString("\n")
	width := 0
	for _, res := range r.Results {
		width = max(width, len(res.Check))
	}
	for _, res := range r.Results {
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", strings.ToUpper(string(res.Status)), width, res.Check, res.Summary)
		indent := strings.Repeat(" ", 4+2+width+2)
		for _, d := range res.Details {
			fmt.Fprintf(&b, "%s%s\n", indent, d)
		}
		if res.Fix != "" {
			fmt.Fprintf(&b, "%sfix: %s\n", indent, res.Fix)
		}
	}
	b.WriteString("\n")
	switch failed, warned := r.Failed(), r.count(Warn); {
	case failed > 0:
		fmt.Fprintf(&b, "%d of %d checks failed%s: fix them before sam deploy.\n", failed, len(r.Results), plural(warned, ", %d warning", ", %d warnings"))
	default:
		fmt.Fprintf(&b, "every check passed%s.\n", plural(warned, " (%d warning)", " (%d warnings)"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, one, many string) string {
	switch n {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf(one, n)
	}
	return fmt.Sprintf(many, n)
}
