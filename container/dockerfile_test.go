package main_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/internal/workload"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
	stage     int // index of the FROM it belongs to; -1 before the first
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	stage := -1
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, instruction{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
		cur = ""
	}
	return out
}

// The Dockerfile keeps the contract the template and the deploy rely on: a base image
// chosen by build argument, a static agent at /usr/local/bin/sandgate-agent as the
// entrypoint, root (only so the agent can start the workload under its own uid), a
// health check that is the task definition's, and the template's writable paths as
// volumes.
func TestDockerfile_Contract(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	last := 0
	for _, in := range ins {
		last = max(last, in.stage)
	}
	if last < 1 {
		t.Fatal("want a multi-stage build")
	}
	final := func(cmd string) []string {
		var out []string
		for _, in := range ins {
			if in.stage == last && in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	hasGlobalArg := slices.ContainsFunc(ins, func(in instruction) bool {
		return in.stage == -1 && in.cmd == "ARG" && strings.HasPrefix(in.args, "BASE_IMAGE=") && len(in.args) > len("BASE_IMAGE=")
	})
	if !hasGlobalArg {
		t.Error("no ARG BASE_IMAGE=<default> before the first FROM")
	}
	if from := final("FROM"); len(from) != 1 || !regexp.MustCompile(`^\$\{?BASE_IMAGE\}?$`).MatchString(from[0]) {
		t.Errorf("final stage FROM %q, want ${BASE_IMAGE}", from)
	}
	if ep := final("ENTRYPOINT"); len(ep) != 1 || ep[0] != `["/usr/local/bin/sandgate-agent"]` {
		t.Errorf("ENTRYPOINT %q", ep)
	}
	// Root: the agent starts the workload under WORKLOAD_UID, which needs SETUID.
	for _, u := range final("USER") {
		if name, group, _ := strings.Cut(u, ":"); (name != "0" && name != "root") || (group != "" && group != "0" && group != "root") {
			t.Errorf("USER %s: the agent runs as root, the workload under WORKLOAD_UID", u)
		}
	}
	hc := final("HEALTHCHECK")
	if len(hc) != 1 || !strings.Contains(hc[0], `CMD ["/usr/local/bin/sandgate-agent", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q", hc)
	}
	var built bool
	for _, in := range ins {
		if in.stage < last && in.cmd == "RUN" && strings.Contains(in.args, "CGO_ENABLED=0") &&
			strings.Contains(in.args, "go build") && strings.Contains(in.args, "./container") {
			built = true
		}
	}
	if !built {
		t.Error("no CGO_ENABLED=0 go build of ./container in a build stage")
	}
	if !slices.ContainsFunc(final("COPY"), func(a string) bool {
		return strings.HasPrefix(a, "--from=") && strings.HasSuffix(a, " /usr/local/bin/sandgate-agent")
	}) {
		t.Error("the final stage does not copy the binary to /usr/local/bin/sandgate-agent")
	}

	checkOwnership(t, ins, last)

	// The template: its health check runs the same command, and every path it mounts
	// a task volume on (DATA_DIR, /tmp) is a VOLUME here, so the image's ownership of
	// those paths reaches the volumes; HOME lies under one of them.
	var tpl struct {
		Resources map[string]struct {
			Properties struct {
				ContainerDefinitions []struct {
					User            *string `yaml:"User"`
					LinuxParameters struct {
						InitProcessEnabled *bool `yaml:"InitProcessEnabled"`
					} `yaml:"LinuxParameters"`
					HealthCheck struct {
						Command []string `yaml:"Command"`
					} `yaml:"HealthCheck"`
					MountPoints []struct {
						ContainerPath string `yaml:"ContainerPath"`
					} `yaml:"MountPoints"`
				} `yaml:"ContainerDefinitions"`
			} `yaml:"Properties"`
		} `yaml:"Resources"`
	}
	b, err := os.ReadFile("../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &tpl); err != nil {
		t.Fatal(err)
	}
	cd := tpl.Resources["SandboxTaskDefinition"].Properties.ContainerDefinitions
	if len(cd) != 1 {
		t.Fatalf("template: %d containers", len(cd))
	}
	// The same process model: the image's user (root), the agent as PID 1.
	if u := cd[0].User; u != nil && *u != "0" && *u != "0:0" {
		t.Errorf("template: container User %q, want root (0) as the image", *u)
	}
	if ip := cd[0].LinuxParameters.InitProcessEnabled; ip == nil || *ip {
		t.Error("template: InitProcessEnabled must be false: the agent is PID 1 and reaps orphans itself")
	}
	if want := []string{"CMD", "/usr/local/bin/sandgate-agent", "healthcheck"}; !slices.Equal(cd[0].HealthCheck.Command, want) {
		t.Errorf("template health check %q, want %q", cd[0].HealthCheck.Command, want)
	}
	volumes := strings.Join(final("VOLUME"), " ")
	var writable []string
	for _, m := range cd[0].MountPoints {
		writable = append(writable, m.ContainerPath)
		if !strings.Contains(volumes, `"`+m.ContainerPath+`"`) {
			t.Errorf("template mounts %s, which is not a VOLUME of the image", m.ContainerPath)
		}
	}
	home := ""
	for _, e := range final("ENV") {
		if m := regexp.MustCompile(`(?:^|\s)HOME=(\S+)`).FindStringSubmatch(e); m != nil {
			home = m[1]
		}
	}
	if !slices.ContainsFunc(writable, func(p string) bool { return home == p || strings.HasPrefix(home, p+"/") }) {
		t.Errorf("HOME=%q is not under a writable path %q", home, writable)
	}
}

// checkOwnership checks the image's layout of DATA_DIR: the workload's uid and gid are
// build arguments whose defaults are internal/workload's, passed on to the agent (ENV);
// the build stage makes DATA_DIR root's and searchable only, the state directory root's
// and private, the workspace the workload's and private; the final stage copies them
// with their owners.
func checkOwnership(t *testing.T, ins []instruction, last int) {
	t.Helper()
	args := map[string]string{}
	for _, in := range ins {
		if in.stage == -1 && in.cmd == "ARG" {
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		}
	}
	if args["WORKLOAD_UID"] != strconv.Itoa(workload.DefaultUID) || args["WORKLOAD_GID"] != strconv.Itoa(workload.DefaultGID) {
		t.Errorf("ARG WORKLOAD_UID=%q WORKLOAD_GID=%q, want internal/workload's defaults %d and %d",
			args["WORKLOAD_UID"], args["WORKLOAD_GID"], workload.DefaultUID, workload.DefaultGID)
	}
	var build, env string
	for _, in := range ins {
		switch {
		case in.stage < last && in.cmd == "RUN":
			build += in.args + " "
		case in.stage == last && in.cmd == "ENV":
			env += " " + in.args
		}
	}
	const data = "/out/home/sandbox/data"
	for _, want := range []string{
		"chmod 0711 " + data + " ",
		"chmod 0700 " + data + "/.sandgate " + data + "/workspace ",
		"chown ${WORKLOAD_UID}:${WORKLOAD_GID} " + data + "/workspace ",
	} {
		if !strings.Contains(build, want) {
			t.Errorf("the build stage does not run %q", want)
		}
	}
	for _, want := range []string{"WORKLOAD_UID=${WORKLOAD_UID}", "WORKLOAD_GID=${WORKLOAD_GID}", "DATA_DIR=/home/sandbox/data"} {
		if !strings.Contains(env, " "+want) {
			t.Errorf("the final stage's ENV lacks %s", want)
		}
	}
}

// The agent builds for Fargate's linux/arm64 as a static binary, as the Dockerfile
// builds it.
func TestDockerfile_StaticArm64Build(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sandgate-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("machine %s, want aarch64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("dynamically linked: program header %s", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("imports %v", libs)
	}
}
