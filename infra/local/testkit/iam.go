package testkit

import (
	"flag"
	"fmt"
	"strings"
	"testing"
)

// EveryStatementNeeded is a check for Main: it fails unless every statement of every
// role of template.yaml was, for some call the package's stacks made, the only
// statement that allowed it. A statement no call needed is an over-grant: remove it
// or write the path that needs it. It judges only a run of the whole package (no -run,
// -skip or -short), since a filtered run exercises only some paths.
func EveryStatementNeeded() error {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return nil
		}
	}
	if testing.Short() || pkg.recorder == nil {
		return nil
	}
	var unneeded []string
	for _, u := range pkg.recorder.Report() {
		if !u.Needed() {
			line := fmt.Sprintf("  %s %s statement %s (allowed %d calls, none alone", u.Role, u.Statement.Policy, u.Statement.Statement, u.Allowed)
			if u.Example != "" {
				line += "; e.g. " + u.Example
			}
			unneeded = append(unneeded, line+")")
		}
	}
	if len(unneeded) > 0 {
		return fmt.Errorf("template statements no call of this package needed (over-grants, or paths without a test):\n%s", strings.Join(unneeded, "\n"))
	}
	return nil
}
