package templatecheck_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/template"
)

// allFunctions is every function the design has; the template must declare exactly these.
var allFunctions = []string{
	"AuthorizeFunction", "ConnectFunction", "MessageFunction", "DisconnectFunction",
	"StatusFunction", "PrewarmFunction", "CleanupFunction", "TaskEventsFunction", "VendFunction", "RelayFunction",
	"PoolFunction", "WebhookFunction", "EraseFunction",
}

// urlFunctions are the functions a sandbox calls through an IAM-authenticated function
// URL (the caller's role session is what they check); no other function has a URL.
var urlFunctions = set("VendFunction", "RelayFunction")

// Every function has its code at functions/<name>/main.go, every main there is one the
// template runs, and each builds as sam build builds it: through the Makefile's
// build-<LogicalId> target, into a static linux/arm64 bootstrap.
func TestFunctions_CodeExistsAndBuilds(t *testing.T) {
	tpl, _ := loadModel(t, scenarios[0])
	if missing, extra := diff(set(allFunctions...), funcIDs(tpl)); len(missing)+len(extra) > 0 {
		t.Fatalf("template functions: missing %v, unexpected %v", missing, extra)
	}
	var present []*template.Function
	for _, id := range allFunctions {
		fn := tpl.Functions[id]
		if _, err := os.Stat(filepath.Join(repoRoot, fn.Dir, "main.go")); err != nil {
			t.Errorf("%s: %s/main.go: %v", id, fn.Dir, err)
			continue
		}
		present = append(present, fn)
	}
	// Code the template does not run is dead or misnamed.
	dirs, err := filepath.Glob(filepath.Join(repoRoot, "functions", "*", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dirs {
		name := filepath.Base(filepath.Dir(m))
		found := false
		for _, fn := range tpl.Functions {
			found = found || fn.Name == name
		}
		if !found {
			t.Errorf("functions/%s has a main.go but template.yaml has no function for it", name)
		}
	}
	if testing.Short() {
		t.Skip("-short: not building the functions")
	}
	for _, fn := range present {
		t.Run(fn.LogicalID, func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command("make", "-s", "-C", abs(t, repoRoot), "build-"+fn.LogicalID, "ARTIFACTS_DIR="+out)
			// The outer make (make test) must not steer this one.
			cmd.Env = withoutEnv(os.Environ(), "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GOOS", "GOARCH", "GOFLAGS")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make build-%s (what sam build runs): %v\n%s", fn.LogicalID, err, b)
			}
			checkBootstrap(t, filepath.Join(out, "bootstrap"))
		})
	}
}

// checkBootstrap asserts that p is what provided.al2023 on arm64 runs: a static
// linux/arm64 executable.
func checkBootstrap(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX || f.Type != elf.ET_EXEC {
		t.Errorf("bootstrap is %v %v %v, want a linux arm64 executable", f.Machine, f.OSABI, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("bootstrap is dynamically linked; want CGO_ENABLED=0")
		}
	}
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 == 0 {
		t.Errorf("bootstrap is not executable: %v", st.Mode())
	}
}

func withoutEnv(env []string, names ...string) []string {
	drop := set(names...)
	var out []string
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !drop[k] {
			out = append(out, kv)
		}
	}
	return out
}

func funcIDs(tpl *template.Template) map[string]bool {
	m := map[string]bool{}
	for id := range tpl.Functions {
		m[id] = true
	}
	return m
}

// agentCallers are the functions that reach the agent's private address and so need the
// VPC; the others stay out of it (no ENIs, no NAT dependency for their AWS calls).
// Prewarm is one because a start that claims a warm pool task hands it its user.
var agentCallers = set("ConnectFunction", "MessageFunction", "DisconnectFunction", "PrewarmFunction")

// Each function runs as sam build and Lambda expect, with its own timeout and memory,
// its own log group with a retention and its own role.
func TestFunctions_Runtime(t *testing.T) {
	sc := scenarios[0]
	tpl, _ := loadModel(t, sc)
	raw := loadRaw(t, templatePath, sc)
	roles := map[string]string{}
	for _, id := range allFunctions {
		fn, r := tpl.Functions[id], raw.Resources[id]
		if fn.Runtime != "provided.al2023" || fn.Architecture != "arm64" || fn.Handler != "bootstrap" {
			t.Errorf("%s: runtime %q, architecture %q, handler %q; want provided.al2023, arm64, bootstrap", id, fn.Runtime, fn.Architecture, fn.Handler)
		}
		if m := template.Lookup(r.Metadata, "BuildMethod"); m == nil || m.Value != "makefile" {
			t.Errorf("%s: Metadata.BuildMethod is not makefile", id)
		}
		if c := template.Lookup(r.Properties, "CodeUri"); c == nil || c.Value != "." {
			t.Errorf("%s: CodeUri must be . (the Makefile's directory)", id)
		}
		// Set per function, not inherited: each one's needs differ.
		for _, p := range []string{"Timeout", "MemorySize"} {
			if template.Lookup(r.Properties, p) == nil {
				t.Errorf("%s: %s is not set on the function", id, p)
			}
		}
		if fn.MemorySize < 128 || fn.Timeout > 5*time.Minute {
			t.Errorf("%s: memory %d MiB, timeout %s", id, fn.MemorySize, fn.Timeout)
		}
		// Connect's notices are asynchronous self-invocations; a retry a minute or two
		// later would send a client a stale status frame.
		retries := fn.AsyncRetries
		if id == "ConnectFunction" && (retries == nil || *retries != 0) {
			t.Errorf("%s: EventInvokeConfig.MaximumRetryAttempts %v, want 0", id, retries)
		}
		// The scheduler invokes Cleanup asynchronously: Lambda's default two retries
		// would run a failed pass again while the next scheduled one starts.
		if id == "CleanupFunction" && (retries == nil || *retries != 0) {
			t.Errorf("%s: EventInvokeConfig.MaximumRetryAttempts %v, want 0", id, retries)
		}
		// A refill asked for again a minute later would find the pool as the next
		// start or the schedule does: no retry.
		if id == "PoolFunction" && (retries == nil || *retries != 0) {
			t.Errorf("%s: EventInvokeConfig.MaximumRetryAttempts %v, want 0", id, retries)
		}
		if urlFunctions[id] != (fn.URLAuthType != "") || fn.URLAuthType != "" && fn.URLAuthType != "AWS_IAM" {
			t.Errorf("%s: function URL auth type %q; want AWS_IAM exactly for %v", id, fn.URLAuthType, urlFunctions)
		}
		if vpc := template.Lookup(r.Properties, "VpcConfig"); agentCallers[id] != (vpc != nil) {
			t.Errorf("%s: VpcConfig present = %v, want %v", id, vpc != nil, agentCallers[id])
		} else if vpc != nil && !refersTo(template.Lookup(vpc, "SubnetIds"), "SubnetIds") {
			t.Errorf("%s: VpcConfig does not come from the SubnetIds parameter", id)
		}
		lg := template.Lookup(r.Properties, "LoggingConfig", "LogGroup")
		if lg == nil {
			t.Errorf("%s: no LoggingConfig.LogGroup: Lambda would create one that never expires", id)
		} else {
			g := raw.Resources[strings.Trim(raw.str(t, lg), "${}")]
			if g == nil || g.Type != "AWS::Logs::LogGroup" || template.Lookup(g.Properties, "RetentionInDays") == nil {
				t.Errorf("%s: log group %s is not a log group with a retention", id, raw.str(t, lg))
			}
		}
		role := strings.TrimSuffix(strings.Trim(raw.str(t, template.Lookup(r.Properties, "Role")), "${}"), ".Arn")
		if other, dup := roles[role]; dup {
			t.Errorf("%s and %s share role %s: each function gets only what it needs", id, other, role)
		}
		roles[role] = id
		if template.Lookup(r.Properties, "Policies") != nil {
			t.Errorf("%s: SAM Policies would add a generated role; use the function's own role", id)
		}
	}
	// API Gateway gives up on an integration after 29 s; a longer function timeout
	// only hides the failure.
	for _, key := range []string{"$connect", "$default", "$disconnect"} {
		fn := tpl.Functions[tpl.WebSocketAPIs[0].Routes[key].Function]
		if fn.Timeout > 29*time.Second {
			t.Errorf("%s (route %s): timeout %s exceeds API Gateway's 29 s", fn.LogicalID, key, fn.Timeout)
		}
	}
	cl := tpl.Functions["CleanupFunction"]
	if len(cl.Events) != 1 || cl.Events[0].Type != template.EventScheduleV2 && cl.Events[0].Type != template.EventSchedule || !cl.Events[0].Enabled {
		t.Fatalf("cleanup events = %+v, want one enabled schedule", cl.Events)
	}
	if cl.Events[0].Schedule != "rate(5 minutes)" || cl.Timeout > 5*time.Minute {
		t.Errorf("cleanup: schedule %s, timeout %s: a run must end before the next starts", cl.Events[0].Schedule, cl.Timeout)
	}
	// What the schedule delivers is what the handler must accept: pin it.
	ev := template.Lookup(raw.Resources["CleanupFunction"].Properties, "Events", cl.Events[0].Name, "Properties")
	if in := template.Lookup(ev, "Input"); in == nil || in.Value != "{}" {
		t.Errorf("cleanup schedule Input must be the fixed JSON {} that the handler accepts")
	}
}
