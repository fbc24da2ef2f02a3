package undeploy

import (
	"regexp"
	"strings"
)

// DeleteCommand is the `sam delete` that deletes stack in region, with profile when
// set. noPrompts skips SAM CLI's own confirmation.
func DeleteCommand(stack, region, profile string, noPrompts bool) []string {
	cmd := []string{"sam", "delete", "--stack-name", stack}
	if region != "" {
		cmd = append(cmd, "--region", region)
	}
	if profile != "" {
		cmd = append(cmd, "--profile", profile)
	}
	if noPrompts {
		cmd = append(cmd, "--no-prompts")
	}
	return cmd
}

// plainWord needs no quoting in a POSIX shell.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// ShellQuote writes args as one POSIX shell command line, quoting what needs it.
func ShellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if plainWord.MatchString(a) {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
