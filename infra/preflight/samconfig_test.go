package preflight_test

import (
	"errors"
	"io/fs"
	"maps"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/preflight"
)

// The repository's own samconfig.toml: a stack name, no parameters yet (sam deploy
// --guided adds them).
func TestReadSamconfig_Repository(t *testing.T) {
	sc, err := preflight.ReadSamconfig("../../samconfig.toml", "")
	if err != nil {
		t.Fatal(err)
	}
	if sc.StackName != "sandgate" || sc.OverridesFrom != "" || len(sc.Overrides) != 0 || sc.Env != "default" {
		t.Fatalf("got %+v", sc)
	}
}

func TestReadSamconfig_Missing(t *testing.T) {
	_, err := preflight.ReadSamconfig(t.TempDir()+"/samconfig.toml", "")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

// What sam deploy --guided writes: one string with escaped quotes, deploy's keys over
// global's.
func TestParseSamconfig_Guided(t *testing.T) {
	const file = `# sam deploy --guided
version = 0.1

[default.global.parameters]
stack_name = "sandgate"
region = "us-east-1"
parameter_overrides = "BucketName=\"from-global\""

[default.deploy.parameters]
capabilities = "CAPABILITY_IAM"
confirm_changeset = true
resolve_s3 = true
s3_prefix = "sandgate"
region = "eu-west-1"
profile = "deployer"
parameter_overrides = "StageName=\"prod\" SandboxImage=\"123456789012.dkr.ecr.eu-west-1.amazonaws.com/sandgate-sandbox:3f2a1bc\" SubnetIds=\"subnet-0a,subnet-0b\" BucketName=\"my-sandgate-data\" SandboxCommand=\"node server.js --port 8080\""
image_repositories = []

[prod.deploy.parameters]
parameter_overrides = ["MaxSandboxes=500", "ParameterKey=SandboxCpu,ParameterValue=1024"]
`
	sc, err := preflight.ParseSamconfig([]byte(file), "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"StageName":      "prod",
		"SandboxImage":   "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sandgate-sandbox:3f2a1bc",
		"SubnetIds":      "subnet-0a,subnet-0b",
		"BucketName":     "my-sandgate-data",
		"SandboxCommand": "node server.js --port 8080",
	}
	if !maps.Equal(sc.Overrides, want) {
		t.Fatalf("overrides = %q, want %q", sc.Overrides, want)
	}
	if sc.Region != "eu-west-1" || sc.Profile != "deployer" || sc.StackName != "sandgate" || sc.OverridesFrom != "default.deploy.parameters" {
		t.Fatalf("got %+v", sc)
	}

	prod, err := preflight.ParseSamconfig([]byte(file), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(prod.Overrides, map[string]string{"MaxSandboxes": "500", "SandboxCpu": "1024"}) || prod.Region != "" {
		t.Fatalf("prod = %+v", prod)
	}
	none, err := preflight.ParseSamconfig([]byte(file), "staging")
	if err != nil || len(none.Overrides) != 0 || none.OverridesFrom != "" {
		t.Fatalf("staging = %+v, %v", none, err)
	}
}

// global's parameter_overrides count when deploy has none.
func TestParseSamconfig_GlobalOverrides(t *testing.T) {
	sc, err := preflight.ParseSamconfig([]byte("[default.global.parameters]\nparameter_overrides = 'BucketName=b1 SubnetIds=subnet-1'\n[default.deploy.parameters]\nregion = 'eu-central-1'\n"), "default")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Overrides["BucketName"] != "b1" || sc.OverridesFrom != "default.global.parameters" || sc.Region != "eu-central-1" {
		t.Fatalf("got %+v", sc)
	}
}

// TOML as people edit it: literal and multi-line strings, escapes, arrays across
// lines with comments, dotted keys, numbers.
func TestParseSamconfig_TOMLForms(t *testing.T) {
	const file = "version = 0.1\n" +
		"[default]\n" +
		"deploy.parameters.stack_name = 'sand\\gate' # literal: the backslash stays\n" +
		"[default.deploy.parameters]\n" +
		"parameter_overrides = [\n" +
		"  \"StageName=dev\", # a comment\n" +
		"  '''SandboxCommand=\"a b\"''',\n" +
		"  \"\"\"\n" +
		"MaxSandboxes=\\\n" +
		"     7\"\"\",\n" +
		"  \"AlarmEmail=ops\\u0040example.com\",\n" +
		"]\n" +
		"\"region\" = \"eu-west-3\"\n" +
		"retries = 1_000\n" +
		"ratio = 1e3\n" +
		"on = false\n" +
		"when = 2026-12-05T10:00:00Z\n"
	sc, err := preflight.ParseSamconfig([]byte(file), "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"StageName": "dev", "SandboxCommand": "a b", "MaxSandboxes": "7", "AlarmEmail": "ops@example.com"}
	if !maps.Equal(sc.Overrides, want) || sc.StackName != `sand\gate` || sc.Region != "eu-west-3" {
		t.Fatalf("got %+v, overrides %q", sc, sc.Overrides)
	}
}

// What the subset does not read is refused with its line, never guessed at.
func TestParseSamconfig_Refusals(t *testing.T) {
	for name, tc := range map[string]struct{ file, want string }{
		"inline table":     {"[default.deploy.parameters]\ntags = {a = 1}\n", "line 2: inline tables"},
		"array of tables":  {"[[default]]\n", "line 1: arrays of tables"},
		"duplicate key":    {"[a]\nx = 1\nx = 2\n", "line 3: key x is defined twice"},
		"unterminated":     {"[a]\n\nx = \"abc\n", "line 3: newline in a single-line string"},
		"bare value":       {"x = abc\n", "line 1: unexpected value \"abc\""},
		"bad escape":       {"x = \"\\q\"\n", "line 1: invalid escape"},
		"junk after value": {"x = 1 2\n", "line 1: unexpected '2'"},
		"table over value": {"a = 1\n[a.b]\n", "line 2: a is a value"},
		"overrides type":   {"[default.deploy.parameters]\nparameter_overrides = 3\n", "neither a string nor a list"},
		"overrides syntax": {"[default.deploy.parameters]\nparameter_overrides = \"BucketName\"\n", "expected Key=Value"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := preflight.ParseSamconfig([]byte(tc.file), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// The forms SAM CLI's CfnParameterOverridesType accepts.
func TestParseOverrides(t *testing.T) {
	for in, want := range map[string]map[string]string{
		``:                                {},
		`A=1 B=two`:                       {"A": "1", "B": "two"},
		`  A=1   B=2  `:                   {"A": "1", "B": "2"},
		`A="x y" B='p q'`:                 {"A": "x y", "B": "p q"},
		`A="say \"hi\"" B='it\'s'`:        {"A": `say "hi"`, "B": "it's"},
		`A=a\ b`:                          {"A": "a b"},
		`A=`:                              {"A": ""},
		`A=x=y`:                           {"A": "x=y"},
		`SubnetIds=subnet-1,subnet-2`:     {"SubnetIds": "subnet-1,subnet-2"},
		`ParameterKey=A,ParameterValue=1`: {"A": "1"},
		`ParameterKey=A,ParameterValue="1 2" ParameterKey=B,ParameterValue=3`: {"A": "1 2", "B": "3"},
		`"A"=1`: {"A": "1"},
	} {
		got, err := preflight.ParseOverrides(in)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("ParseOverrides(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`A`, `=1`, `A="unterminated`, `A="x"y`, `A=x"y`, `ParameterKey=A`, `A-B=1`} {
		if got, err := preflight.ParseOverrides(in); !errors.Is(err, preflight.ErrOverrides) {
			t.Errorf("ParseOverrides(%q) = %q, %v; want ErrOverrides", in, got, err)
		}
	}
}
