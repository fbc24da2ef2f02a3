package templatecheck_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// cfn-lint (the Python linter, with the SAM translator) validates every resource's
// properties against AWS's current resource specification, after the SAM transform.
// The npm package of that name is a different, 2019-era linter that reports false
// errors on valid SAM templates (see docs/DEPLOY.md), so only the Python one is used.
// It is not installable from this project's registries; where it is absent the test
// skips, `make test` prints a line saying so, and `make validate` fails.
func TestCfnLint(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not running cfn-lint")
	}
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Skip("cfn-lint not found on PATH: the Python cfn-lint (1.x) is needed for this check; make validate runs it")
	}
	t.Parallel() // seconds of Python start-up; overlap it with the transform check
	out, err := exec.Command(bin, "--", templatePath, networkTemplate).CombinedOutput()
	if err != nil {
		t.Errorf("cfn-lint: %v\n%s", err, out)
	}
}

// transformed prints the resource types of template.yaml after the SAM transform, as
// CloudFormation will create them, using the SAM translator that cfn-lint ships with.
const transformed = `
import json, sys
from cfnlint.decode import decode
from cfnlint.template.transforms._sam import Transform
tpl, errs = decode(sys.argv[1])
if errs:
    sys.exit(str(errs))
t = Transform(sys.argv[1], tpl, "us-east-1")
errs = t.transform_template()
if errs:
    sys.exit(str(errs))
print(json.dumps({k: v["Type"] for k, v in t._template["Resources"].items()}))
`

// The SAM transform must not add roles or policies of its own: every role that will
// exist is one TestRoles_LeastPrivilege reads.
func TestSAMTransform_AddsNoRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not running the SAM translator")
	}
	py, err := exec.LookPath("python3")
	if err != nil || exec.Command(py, "-c", "import cfnlint.template.transforms._sam").Run() != nil {
		t.Skip("python3 with cfn-lint (and its SAM translator) not found; make validate runs it")
	}
	t.Parallel()
	out, err := exec.Command(py, "-c", transformed, templatePath).Output()
	if err != nil {
		t.Fatalf("SAM transform: %v", err)
	}
	var types map[string]string
	if err := json.Unmarshal(out, &types); err != nil {
		t.Fatal(err)
	}
	raw := loadRaw(t, templatePath, scenarios[0])
	for id, typ := range types {
		if !strings.HasPrefix(typ, "AWS::IAM::") {
			continue
		}
		if r := raw.Resources[id]; r == nil || r.Type != typ {
			t.Errorf("the SAM transform adds %s (%s), which the role checks never see", id, typ)
		}
	}
	if types["CleanupFunction"] != "AWS::Lambda::Function" {
		t.Errorf("transform output lacks CleanupFunction: %v", types)
	}
}
