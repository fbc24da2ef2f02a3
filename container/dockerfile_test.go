package main_test

import (
	"debug/elf"
	"fmt"
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
	return parseDockerfileText(string(b))
}

func parseDockerfileText(text string) []instruction {
	var out []instruction
	stage := -1
	var cur string
	for _, line := range strings.Split(text, "\n") {
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

// lastStage is the index of the final stage, the image a build makes by default.
func lastStage(ins []instruction) int {
	last := -1
	for _, in := range ins {
		last = max(last, in.stage)
	}
	return last
}

// stageArgs returns the args of stage's instructions of cmd.
func stageArgs(ins []instruction, stage int, cmd string) []string {
	var out []string
	for _, in := range ins {
		if in.stage == stage && in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// sandboxContainer is what template.yaml's sandbox task definition asks of the image
// it runs: its process model, health check and writable paths.
type sandboxContainer struct {
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
}

func loadSandboxContainer(t *testing.T) sandboxContainer {
	t.Helper()
	var tpl struct {
		Resources map[string]struct {
			Properties struct {
				ContainerDefinitions []sandboxContainer `yaml:"ContainerDefinitions"`
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
	// The same process model as every image: root, the agent as PID 1.
	if u := cd[0].User; u != nil && *u != "0" && *u != "0:0" {
		t.Errorf("template: container User %q, want root (0) as the image", *u)
	}
	if ip := cd[0].LinuxParameters.InitProcessEnabled; ip == nil || *ip {
		t.Error("template: InitProcessEnabled must be false: the agent is PID 1 and reaps orphans itself")
	}
	if want := []string{"CMD", "/usr/local/bin/sandgate-agent", "healthcheck"}; !slices.Equal(cd[0].HealthCheck.Command, want) {
		t.Errorf("template health check %q, want %q", cd[0].HealthCheck.Command, want)
	}
	return cd[0]
}

// Patterns of a final stage that would hand the workload privileges: file
// capabilities, setuid or setgid bits, a capability added to the container.
var (
	setcap    = regexp.MustCompile(`\bsetcap\b`)
	setuidBit = regexp.MustCompile(`\bchmod\s+(?:-\S+\s+)*(?:[ugoa]*\+[rwxXt]*s|0?[2-7][0-7]{3}\b)|--chmod=0?[2-7][0-7]{3}\b`)
	capAdd    = regexp.MustCompile(`--cap-add|--privileged|security\.insecure`)
	// secretVar is what a variable's name would say if it held a secret: baked into an
	// image, it is readable by whoever pulls the image.
	secretVar = regexp.MustCompile(`(?i)secret|password|passwd|token|private|credential|(^|_)(api_?)?key($|_)`)
)

// imageProblems lists how the final stage of a Dockerfile breaks what the sandbox
// needs of any image (docs/WORKLOADS.md, "Your image"): the agent copied in and the
// entrypoint, root — and only so that the agent can start the workload under a uid of
// its own, with no capability, so no setuid program, file capability or added
// capability — the workload's uid never 0, the health check the template's, the
// template's writable paths as volumes with HOME under one, and no secret baked in.
func imageProblems(ins []instruction, c sandboxContainer) []string {
	var p []string
	last := lastStage(ins)
	if last < 0 {
		return []string{"no FROM"}
	}
	final := func(cmd string) []string { return stageArgs(ins, last, cmd) }
	args := map[string]string{}
	for _, in := range ins {
		if in.stage == -1 && in.cmd == "ARG" {
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		}
	}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return args[k] })
	}

	if ep := final("ENTRYPOINT"); len(ep) != 1 || ep[0] != `["/usr/local/bin/sandgate-agent"]` {
		p = append(p, fmt.Sprintf("ENTRYPOINT %q, want [\"/usr/local/bin/sandgate-agent\"]: the agent is PID 1", ep))
	}
	if !slices.ContainsFunc(final("COPY"), func(a string) bool {
		return strings.HasPrefix(a, "--from=") && strings.HasSuffix(a, " /usr/local/bin/sandgate-agent")
	}) {
		p = append(p, "the final stage does not copy the agent to /usr/local/bin/sandgate-agent from its stage")
	}
	users := final("USER")
	if len(users) == 0 {
		p = append(p, "no USER in the final stage: the base image's user may not be root, and the agent needs root to start the workload under its uid")
	}
	for _, u := range users {
		if name, group, _ := strings.Cut(u, ":"); (name != "0" && name != "root") || (group != "" && group != "0" && group != "root") {
			p = append(p, fmt.Sprintf("USER %s: the agent runs as root, the workload under WORKLOAD_UID", u))
		}
	}
	hc := final("HEALTHCHECK")
	if len(hc) != 1 || !strings.Contains(hc[0], `CMD ["/usr/local/bin/sandgate-agent", "healthcheck"]`) {
		p = append(p, fmt.Sprintf("HEALTHCHECK %q, want the agent's healthcheck", hc))
	}
	env := map[string]string{}
	for _, e := range final("ENV") {
		for _, m := range regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`).FindAllStringSubmatch(e, -1) {
			env[m[1]] = expand(strings.Trim(m[2], `"`))
		}
	}
	for name := range env {
		if secretVar.MatchString(name) {
			p = append(p, fmt.Sprintf("ENV %s: a secret in an image is readable by whoever pulls it (give the agent secrets through the task definition)", name))
		}
	}
	for _, name := range []string{"WORKLOAD_UID", "WORKLOAD_GID"} {
		if v, ok := env[name]; ok {
			if n, err := strconv.Atoi(v); err != nil || n <= 0 {
				p = append(p, fmt.Sprintf("ENV %s=%q: the workload runs under a uid and gid of its own, never 0", name, v))
			}
		}
	}
	if env["DATA_DIR"] != "/home/sandbox/data" {
		p = append(p, fmt.Sprintf("ENV DATA_DIR=%q, want /home/sandbox/data, where the template mounts the data volume", env["DATA_DIR"]))
	}
	volumes := strings.Join(final("VOLUME"), " ")
	var writable []string
	for _, m := range c.MountPoints {
		writable = append(writable, m.ContainerPath)
		if !strings.Contains(volumes, `"`+m.ContainerPath+`"`) {
			p = append(p, fmt.Sprintf("the template mounts %s, which is not a VOLUME of the image", m.ContainerPath))
		}
	}
	home := env["HOME"]
	if !slices.ContainsFunc(writable, func(w string) bool { return home == w || strings.HasPrefix(home, w+"/") }) {
		p = append(p, fmt.Sprintf("HOME=%q is not under a writable path %q (the root file system is read-only)", home, writable))
	}
	for _, in := range ins {
		if in.stage != last {
			continue
		}
		for _, bad := range []*regexp.Regexp{setcap, setuidBit, capAdd} {
			if bad.MatchString(in.args) {
				p = append(p, fmt.Sprintf("%s %s: gives privileges the workload must not have", in.cmd, in.args))
			}
		}
	}
	return p
}

// Every sandbox image under container/ — the default image and each example — keeps
// the process model the isolation rests on (imageProblems), with the template's
// container as it is written.
func TestDockerfile_EveryImageKeepsTheProcessModel(t *testing.T) {
	c := loadSandboxContainer(t)
	files, _ := filepath.Glob("*/Dockerfile")
	files = append([]string{"Dockerfile"}, files...)
	if !slices.Contains(files, "node-gateway/Dockerfile") {
		t.Fatalf("images %q: the Node example is missing", files)
	}
	for _, f := range files {
		for _, problem := range imageProblems(parseDockerfile(t, f), c) {
			t.Errorf("%s: %s", f, problem)
		}
	}
}

// The check fails an image that does not keep the process model: each of these
// Dockerfiles breaks it one way, and is named for how.
func TestDockerfile_ImageThatBreaksTheProcessModelFails(t *testing.T) {
	c := loadSandboxContainer(t)
	good, err := os.ReadFile("node-gateway/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if p := imageProblems(parseDockerfileText(string(good)), c); len(p) > 0 {
		t.Fatalf("the good image has problems: %q", p)
	}
	for name, tc := range map[string]struct{ old, new, want string }{
		"runs as the image's user":   {"USER 0:0", "USER node", "USER node"},
		"no USER, the base image's":  {"USER 0:0\n", "", "no USER"},
		"the workload as root":       {"WORKLOAD_UID=${WORKLOAD_UID}", "WORKLOAD_UID=0", "WORKLOAD_UID"},
		"another entrypoint":         {`ENTRYPOINT ["/usr/local/bin/sandgate-agent"]`, `ENTRYPOINT ["node", "/app/gateway.js"]`, "ENTRYPOINT"},
		"the agent behind an init":   {`ENTRYPOINT ["/usr/local/bin/sandgate-agent"]`, `ENTRYPOINT ["tini", "--", "/usr/local/bin/sandgate-agent"]`, "ENTRYPOINT"},
		"a setuid program":           {"&& chmod 1777 /tmp", "&& chmod 4755 /usr/bin/node && chmod 1777 /tmp", "privileges"},
		"a setuid bit, symbolically": {"&& chmod 1777 /tmp", "&& chmod u+s /usr/bin/node && chmod 1777 /tmp", "privileges"},
		"a file capability":          {"&& chmod 1777 /tmp", "&& setcap cap_net_raw+ep /usr/bin/node && chmod 1777 /tmp", "privileges"},
		"no data volume":             {`VOLUME ["/home/sandbox/data", "/tmp"]`, `VOLUME ["/tmp"]`, "not a VOLUME"},
		"HOME on the read-only root": {"HOME=/tmp", "HOME=/home/node", "HOME="},
		"a key baked in":             {"NODE_ENV=production", "NODE_ENV=production ANTHROPIC_API_KEY=sk-ant-123", "ANTHROPIC_API_KEY"},
		"no agent copied in":         {"COPY --from=agent /sandgate-agent /usr/local/bin/sandgate-agent\n", "", "copy the agent"},
		"another data directory":     {"DATA_DIR=/home/sandbox/data", "DATA_DIR=/data", "DATA_DIR"},
		"another health check":       {`CMD ["/usr/local/bin/sandgate-agent", "healthcheck"]`, `CMD ["node", "-e", "1"]`, "HEALTHCHECK"},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(good), tc.old) {
				t.Fatalf("the Node example has no %q to change", tc.old)
			}
			bad := strings.Replace(string(good), tc.old, tc.new, 1)
			p := imageProblems(parseDockerfileText(bad), c)
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("problems %q, want one naming %q", p, tc.want)
			}
		})
	}
}

// The default image builds the agent, for linux/arm64, in a build stage; a stage of
// its own holds the binary alone (COPY --from it turns any image into a sandbox); the
// final stage is a base image chosen by build argument, with the agent copied from
// that stage.
func TestDockerfile_Contract(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	last := lastStage(ins)
	if last < 1 {
		t.Fatal("want a multi-stage build")
	}
	hasGlobalArg := slices.ContainsFunc(ins, func(in instruction) bool {
		return in.stage == -1 && in.cmd == "ARG" && strings.HasPrefix(in.args, "BASE_IMAGE=") && len(in.args) > len("BASE_IMAGE=")
	})
	if !hasGlobalArg {
		t.Error("no ARG BASE_IMAGE=<default> before the first FROM")
	}
	if from := stageArgs(ins, last, "FROM"); len(from) != 1 || !regexp.MustCompile(`^\$\{?BASE_IMAGE\}?$`).MatchString(from[0]) {
		t.Errorf("final stage FROM %q, want ${BASE_IMAGE}", from)
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
	// The agent's stage: FROM scratch AS agent, one COPY of the binary to /sandgate-agent.
	agentStage := -1
	for _, in := range ins {
		if in.cmd == "FROM" && strings.EqualFold(in.args, "scratch AS agent") {
			agentStage = in.stage
		}
	}
	if agentStage < 0 || agentStage == last {
		t.Fatal("no FROM scratch AS agent stage before the final one")
	}
	var agentIns []string
	for _, in := range ins {
		if in.stage == agentStage && in.cmd != "FROM" {
			agentIns = append(agentIns, in.cmd+" "+in.args)
		}
	}
	if len(agentIns) != 1 || !regexp.MustCompile(`^COPY --from=build \S+/sandgate-agent /sandgate-agent$`).MatchString(agentIns[0]) {
		t.Errorf("the agent stage is %q, want one COPY of the binary to /sandgate-agent", agentIns)
	}
	if !slices.Contains(stageArgs(ins, last, "COPY"), "--from=agent /sandgate-agent /usr/local/bin/sandgate-agent") {
		t.Error("the final stage does not take the agent from the agent stage, as any image would")
	}
	checkOwnership(t, ins, last)
}

// The Node example's image: the agent from the agent stage's image, the gateway's
// files (which exist, and are what the build context lets in) where SANDBOX_COMMAND
// runs them.
func TestDockerfile_NodeExample(t *testing.T) {
	ins := parseDockerfile(t, "node-gateway/Dockerfile")
	last := lastStage(ins)
	if from := stageArgs(ins, 0, "FROM"); len(from) != 1 || from[0] != "${AGENT_IMAGE} AS agent" {
		t.Errorf("first stage FROM %q, want ${AGENT_IMAGE} AS agent", from)
	}
	var env string
	for _, e := range stageArgs(ins, last, "ENV") {
		env += " " + e
	}
	if !strings.Contains(env, `SANDBOX_COMMAND="node /app/gateway.js"`) {
		t.Errorf("ENV %s does not run the gateway", env)
	}
	ignore, err := os.ReadFile("node-gateway/Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var copied []string
	for _, c := range stageArgs(ins, last, "COPY") {
		fields := strings.Fields(c)
		if strings.HasPrefix(fields[0], "--from") {
			continue
		}
		if fields[len(fields)-1] != "/app/" {
			t.Errorf("COPY %s: the gateway's files go to /app/", c)
		}
		for _, src := range fields[:len(fields)-1] {
			rel, _ := strings.CutPrefix(src, "container/")
			if _, err := os.Stat(rel); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
			if !strings.Contains(string(ignore), "!"+src+"\n") {
				t.Errorf("COPY %s: the build context's dockerignore leaves it out", src)
			}
			copied = append(copied, filepath.Base(src))
		}
	}
	for _, need := range []string{"gateway.js", "websocket.js", "package.json"} {
		if !slices.Contains(copied, need) {
			t.Errorf("the image lacks %s", need)
		}
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
