package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
)

// Build is the application built as make build-local builds it: each function as
// <Dir>/<name>/bootstrap, the agent as <Dir>/agent.
type Build struct {
	Dir string
	// Root is the repository: it holds go.mod and template.yaml.
	Root string
}

// Agent is the agent binary, the stand-in for the sandbox image.
func (b *Build) Agent() string { return filepath.Join(b.Dir, "agent") }

// Template is the repository's template.yaml.
func (b *Build) Template() string { return filepath.Join(b.Root, "template.yaml") }

// NewBuild builds every function under functions/ and the agent into dir, with one
// go build so the packages compile in parallel and share the cache.
func NewBuild(dir string) (*Build, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, ".bin")
	cmd := exec.Command(goBin(), "build", "-tags", "lambda.norpc", "-trimpath", "-o", bin+string(filepath.Separator), "./functions/...", "./container")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build functions and agent: %w\n%s", err, out)
	}
	mains, err := filepath.Glob(filepath.Join(root, "functions", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		return nil, fmt.Errorf("build functions: no functions/*/main.go under %s", root)
	}
	for _, m := range mains {
		name := filepath.Base(filepath.Dir(m))
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return nil, fmt.Errorf("build %s: %w", name, err)
		}
		if err := os.Rename(filepath.Join(bin, name), filepath.Join(dir, name, "bootstrap")); err != nil {
			return nil, fmt.Errorf("build %s: %w", name, err)
		}
	}
	b := &Build{Dir: dir, Root: root}
	if err := os.Rename(filepath.Join(bin, "container"), b.Agent()); err != nil {
		return nil, fmt.Errorf("build agent: %w", err)
	}
	return b, os.Remove(bin)
}

// goBin is the go command: the one on PATH, else the one of the toolchain that built
// the test.
func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// RunWithPrograms builds the programs a package's tests run — each package (a path
// relative to the package's directory, as go build takes it) built as make
// build-local builds a function, into a temporary directory, its path stored where the
// map's key points — then runs the tests and removes the directory. Call it from
// TestMain and exit with its result.
func RunWithPrograms(m *testing.M, programs map[*string]string) int {
	dir, err := os.MkdirTemp("", "sandgate-programs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testkit:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Searchable by every uid, so a program may run as another user (a task's user).
	if err := os.Chmod(dir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, "testkit:", err)
		return 1
	}
	for path, pkg := range programs {
		out := filepath.Join(dir, strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "-"), "bootstrap")
		cmd := exec.Command(goBin(), "build", "-tags", "lambda.norpc", "-trimpath", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "testkit: build %s: %v\n%s", pkg, err, b)
			return 1
		}
		*path = out
	}
	return m.Run()
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository: no go.mod above the working directory")
		}
		dir = parent
	}
}

// pkg is what the test binary shares: its build, made on first use so a package whose
// selected tests and benchmarks need no stack builds nothing, and its shared stacks.
var pkg struct {
	dir   string
	once  sync.Once
	build *Build
	err   error

	mu     sync.Mutex
	stacks []*Stack // started by Shared.Get, closed by Main

	// recorder records, for every stack the package starts, which template statement
	// allowed each call (EveryStatementNeeded reads it).
	recorder *iampolicy.Recorder
}

// Main runs a package's tests and benchmarks (call it from TestMain and exit with its
// result). Binaries builds into a directory Main owns; afterwards Main closes the
// package's shared stacks, removes the directory and fails the run if a process started
// from it (an agent, a workload, a function) is still alive: tests leave no orphans.
// When every test passed, each of checks runs and fails the run with its error.
func Main(m *testing.M, checks ...func() error) int {
	pkg.recorder = iampolicy.NewRecorder()
	dir, err := os.MkdirTemp("", "sandgate-testkit-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testkit:", err)
		return 1
	}
	pkg.dir = dir
	defer os.RemoveAll(dir)
	code := m.Run()
	if err := closeShared(); err != nil {
		fmt.Fprintln(os.Stderr, "testkit:", err)
		code = 1
	}
	for _, check := range checks {
		if code != 0 {
			break
		}
		if err := check(); err != nil {
			fmt.Fprintln(os.Stderr, "testkit:", err)
			code = 1
		}
	}
	if pids := Leftovers(dir); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "testkit: processes of the test's binaries left behind: %s\n", strings.Join(pids, ", "))
		code = 1
	}
	return code
}

// Binaries returns the test binary's build, building it on the first call. It needs
// Main in the package's TestMain.
func Binaries(tb testing.TB) *Build {
	tb.Helper()
	if pkg.dir == "" {
		tb.Fatal("testkit: call testkit.Main from TestMain")
	}
	pkg.once.Do(func() { pkg.build, pkg.err = NewBuild(pkg.dir) })
	if pkg.err != nil {
		tb.Fatal(pkg.err)
	}
	return pkg.build
}

// Run runs bin with exactly env (nothing inherited) in a directory of its own and
// returns its combined output and exit code.
func Run(tb testing.TB, bin string, env []string, args ...string) (string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = tb.TempDir()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	tb.Fatal(err)
	return "", -1
}

// Leftovers returns the live processes (pid:executable) whose executable lies under dir.
func Leftovers(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			// A non-dumpable process (the agent) hides its exe link from other users;
			// its command line still names the binary.
			cmd, cerr := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if cerr != nil {
				continue
			}
			exe, _, _ = strings.Cut(string(cmd), "\x00")
		}
		if !strings.HasPrefix(exe, dir+string(filepath.Separator)) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// The state follows the parenthesised command name; Z is dead, not yet reaped.
			if _, rest, ok := strings.Cut(string(b), ") "); ok && strings.HasPrefix(rest, "Z") {
				continue
			}
		}
		out = append(out, e.Name()+":"+exe)
	}
	return out
}

// workloads are the programs BuildWorkload built, by package.
var workloads struct {
	mu    sync.Mutex
	built map[string]string
}

// BuildWorkload builds the program in path (a package relative to the test's, as go
// build takes it) once per test binary, where a sandbox's workload can run it: in a
// directory every uid may search, under Main's directory (so Main fails the run if one
// of its processes outlives the tests). It returns the program, for SANDBOX_COMMAND.
// It needs Main in the package's TestMain.
func BuildWorkload(tb testing.TB, path string) string {
	tb.Helper()
	if pkg.dir == "" {
		tb.Fatal("testkit: call testkit.Main from TestMain")
	}
	workloads.mu.Lock()
	defer workloads.mu.Unlock()
	if p, ok := workloads.built[path]; ok {
		return p
	}
	// Main's directory is private; the workloads' below it is searchable by all.
	dir := filepath.Join(pkg.dir, "workloads")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{pkg.dir, 0o711}, {dir, 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			tb.Fatal(err)
		}
	}
	out := filepath.Join(dir, strings.ReplaceAll(strings.Trim(path, "./"), "/", "-"))
	cmd := exec.Command(goBin(), "build", "-trimpath", "-o", out, path)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testkit: build workload %s: %v\n%s", path, err, b)
	}
	if workloads.built == nil {
		workloads.built = map[string]string{}
	}
	workloads.built[path] = out
	return out
}
