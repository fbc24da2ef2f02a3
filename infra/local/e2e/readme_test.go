package e2e_test

import (
	"bufio"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
)

// readmeCommands are the shell commands README.md shows: each line of its sh blocks
// (continuations joined, comments dropped) and each inline `make …`.
func readmeCommands(t *testing.T, readme string) []string {
	t.Helper()
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	inline := regexp.MustCompile("`(make [^`]*)`")
	inSh, cont := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
			continue
		case strings.HasPrefix(line, "```"):
			inSh = false
			continue
		}
		if !inSh {
			for _, m := range inline.FindAllStringSubmatch(line, -1) {
				cmds = append(cmds, m[1])
			}
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if strings.HasSuffix(line, `\`) {
			cont += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		if line = strings.TrimSpace(cont + line); line != "" {
			cmds = append(cmds, line)
		}
		cont = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// Every command README.md shows works as written. Each is run here, or — where it
// cannot run inside a test (it is the test suite, a long-running server, a benchmark,
// or it needs AWS, Docker or SAM CLI) — checked by make's dry run and, for make dev and
// sam local invoke, by the tests named beside them. A command README gains that this
// test does not know fails it, so none goes unchecked.
func TestREADME_EveryCommandWorksAsWritten(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, filepath.Join(root, "README.md"))
	if len(cmds) < 10 {
		t.Fatalf("found only %d commands in README.md: %q", len(cmds), cmds)
	}
	s := apps.Get(t)
	// A directory laid out as the repository is after make dev: .sandgate/aws.env.
	work := t.TempDir()
	if err := os.MkdirAll(filepath.Join(work, ".sandgate"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAWSEnv(filepath.Join(work, ".sandgate", stack.AWSEnvFile)); err != nil {
		t.Fatal(err)
	}
	// What make dev's users leave: a saved file under users/, which `aws s3 ls` lists
	// (it exits 1 on an empty listing).
	if _, err := s.S3Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(s.Bucket),
		Key: aws.String("users/user_readme/notes.json"), Body: strings.NewReader("[]")}); err != nil {
		t.Fatal(err)
	}
	sh := func(dir, script string) (string, error) {
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		// A new shell's environment: nothing of this process's keys or endpoints.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GOCACHE=" + goEnv(t, "GOCACHE"), "GOPATH=" + goEnv(t, "GOPATH")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Commands run against the stack need the session before them: a `source` line is
	// prefixed to the aws commands that follow it.
	var sourced string
	for _, c := range cmds {
		c := c
		switch {
		case strings.HasPrefix(c, "source "):
			sourced = c + " && "
			continue
		case strings.HasPrefix(c, "aws "):
			out, err := sh(work, sourced+c)
			if err != nil {
				t.Errorf("%s: %v\n%s", c, err, out)
			} else if strings.HasPrefix(c, "aws s3 ls") && !strings.Contains(out, "users/user_readme/notes.json") {
				t.Errorf("%s does not list the saved file:\n%s", c, out)
			}
			continue
		case strings.HasPrefix(c, "sam local invoke "):
			// SAM CLI is not installable here: the files it is given are the ones make
			// dev writes (TestStack_SAMEnv_RunsTheFunctionsAgainstTheStack runs them).
			for _, want := range []string{"--env-vars .sandgate/" + stack.SAMEnvFile, "--docker-network host"} {
				if !strings.Contains(c, want) {
					t.Errorf("%s: want %q", c, want)
				}
			}
			ev := strings.Fields(c)
			for i, f := range ev {
				if f == "-e" && i+1 < len(ev) {
					if _, err := os.Stat(filepath.Join(root, ev[i+1])); err != nil {
						t.Errorf("%s: %v", c, err)
					}
				}
			}
		case c == "make help":
			out, err := sh(root, c)
			if err != nil {
				t.Fatalf("%s: %v\n%s", c, err, out)
			}
			for _, other := range cmds {
				if f := strings.Fields(other); len(f) > 1 && f[0] == "make" && !strings.Contains(out, "  "+f[1]+" ") {
					t.Errorf("make help does not list %s", f[1])
				}
			}
		case strings.HasPrefix(c, "make sign "):
			out, err := sh(root, c)
			if err != nil {
				t.Fatalf("%s: %v\n%s", c, err, out)
			}
			// The URL is the one line on stdout; stderr says which secret signed it.
			var printed string
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "ws://") || strings.HasPrefix(l, "wss://") {
					printed = l
				}
			}
			u, err := url.Parse(printed)
			if err != nil {
				t.Fatalf("%s printed %q", c, out)
			}
			v, err := auth.NewVerifier([]string{local.DevSecret})
			if err != nil {
				t.Fatal(err)
			}
			if user, err := v.VerifyQuery(u.Query()); err != nil || user != "user_abc" || u.Host != "127.0.0.1:8700" {
				t.Errorf("%s printed %q: user %q, %v", c, out, user, err)
			}
		case strings.HasPrefix(c, "make "):
			// Long-running, the suite itself, or needing AWS, Docker or cfn-lint: make's
			// dry run shows the target exists and takes the variables as written.
			// make dev runs in infra/local/cmd/dev's tests, make invoke in
			// TestStack_SAMEnv_RunsTheFunctionsAgainstTheStack.
			if out, err := sh(root, strings.Replace(c, "make ", "make -n ", 1)); err != nil {
				t.Errorf("%s: %v\n%s", c, err, out)
			}
		default:
			t.Errorf("README shows a command this test does not check: %s", c)
		}
		sourced = ""
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
