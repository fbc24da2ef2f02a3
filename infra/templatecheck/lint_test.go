package templatecheck_test

import (
	"os/exec"
	"testing"
)

// cfn-lint (the Python linter, with the SAM translator) validates every resource's
// properties against AWS's current resource specification, after the SAM transform.
// The npm package of that name is a different, 2019-era linter that reports false
// errors on valid SAM templates (see docs/DEPLOY.md), so only the Python one is used.
// It is not installable from this project's registries; where it is absent the test
// skips, and `make validate` fails.
func TestCfnLint(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not running cfn-lint")
	}
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Skip("cfn-lint not found on PATH: the Python cfn-lint (1.x) is needed for this check")
	}
	for _, p := range []string{templatePath, networkTemplate} {
		out, err := exec.Command(bin, "--", p).CombinedOutput()
		if err != nil {
			t.Errorf("cfn-lint %s: %v\n%s", p, err, out)
		}
	}
}
