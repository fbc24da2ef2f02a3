package main_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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
// entrypoint, a non-root user, a health check that is the task definition's, and the
// template's writable paths as volumes.
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
	users := final("USER")
	if len(users) == 0 {
		t.Error("the final stage runs as root: no USER")
	}
	for _, u := range users {
		name, _, _ := strings.Cut(u, ":")
		if name == "root" || name == "0" {
			t.Errorf("USER %s", u)
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

	// The template: its health check runs the same command, and every path it mounts
	// a task volume on (DATA_DIR, /tmp) is a VOLUME here, so the image's ownership of
	// those paths reaches the volumes; HOME lies under one of them.
	var tpl struct {
		Resources map[string]struct {
			Properties struct {
				ContainerDefinitions []struct {
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
