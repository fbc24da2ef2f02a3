package preflight_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/preflight"
)

const repoTemplate = "../../template.yaml"

// The repository's template: the parameters without defaults are the ones sam deploy
// --guided asks for, the sandbox task runs ARM64, and no function reserves concurrency.
func TestLoadStack_RepositoryTemplate(t *testing.T) {
	s, err := preflight.LoadStack(repoTemplate, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, required := range []string{"BucketName", "SandboxImage", "SubnetIds"} {
		if !slices.Contains(s.Missing, required) {
			t.Errorf("Missing = %q, want it to name %s", s.Missing, required)
		}
	}
	if v, _ := s.Value(preflight.ParamSigningSecretName); v != "sandgate/signing-secrets" {
		t.Errorf("SigningSecretName defaults to %q", v)
	}
	if s.CPUArchitecture != "ARM64" || s.Architecture() != "arm64" {
		t.Errorf("architecture %q (%q), want ARM64", s.CPUArchitecture, s.Architecture())
	}
	if s.ReservedTotal() != 0 || len(s.Invalid) != 0 || len(s.Unreadable) != 0 {
		t.Errorf("reserved %v, invalid %q, unreadable %q", s.Reserved, s.Invalid, s.Unreadable)
	}
}

// The execution role of the repository's template pulls from the deploying account's
// repositories in the stack's region only.
func TestStack_PullPatterns(t *testing.T) {
	s, err := preflight.LoadStack(repoTemplate, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Region = "cn-north-1"
	got, known, err := s.PullPatterns("123456789012")
	if err != nil || !known || !slices.Equal(got, []string{"arn:aws-cn:ecr:cn-north-1:123456789012:repository/*"}) {
		t.Fatalf("PullPatterns = %q, %v, %v", got, known, err)
	}
}

// Each override the template refuses is named, and left out: the others still apply.
func TestLoadStack_InvalidOverrides(t *testing.T) {
	s, err := preflight.LoadStack(repoTemplate, map[string]string{
		"SandboxCpu": "300", "NoSuchParameter": "x", "BucketName": "Not_A_Bucket", "MaxSandboxes": "7",
		"SubnetIds": "subnet-1, subnet-2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Invalid) != 3 {
		t.Fatalf("Invalid = %q, want BucketName, NoSuchParameter and SandboxCpu", s.Invalid)
	}
	for i, name := range []string{"BucketName", "NoSuchParameter", "SandboxCpu"} {
		if !strings.HasPrefix(s.Invalid[i], name+":") {
			t.Errorf("Invalid[%d] = %q, want %s first", i, s.Invalid[i], name)
		}
	}
	if v, _ := s.Value("MaxSandboxes"); v != "7" {
		t.Errorf("MaxSandboxes = %q: the valid override was lost", v)
	}
	if v, _ := s.Value("SandboxCpu"); v != "512" {
		t.Errorf("SandboxCpu = %q, want the default after the refused override", v)
	}
	if got := s.List("SubnetIds"); !slices.Equal(got, []string{"subnet-1", "subnet-2"}) {
		t.Errorf("SubnetIds = %q", got)
	}
	if !slices.Contains(s.Missing, "BucketName") {
		t.Errorf("Missing = %q: a refused value leaves the parameter without one", s.Missing)
	}
}

// Reserved concurrency: a function's own, else Globals.Function's, through !Ref;
// conditioned-out functions do not count; an X86_64 task definition is read too.
func TestParseStack_ReservedAndArchitecture(t *testing.T) {
	const tpl = `Transform: AWS::Serverless-2016-10-31
Parameters:
  Reserve: {Type: Number, Default: 5}
  SandboxImage: {Type: String}
  WithExtra: {Type: String, Default: "false"}
Conditions:
  Extra: !Equals [!Ref WithExtra, "true"]
Globals:
  Function:
    ReservedConcurrentExecutions: !Ref Reserve
Resources:
  One:
    Type: AWS::Serverless::Function
    Properties: {Handler: bootstrap}
  Two:
    Type: AWS::Serverless::Function
    Properties: {Handler: bootstrap, ReservedConcurrentExecutions: 20}
  Plain:
    Type: AWS::Lambda::Function
    Properties: {Handler: bootstrap}
  Optional:
    Type: AWS::Serverless::Function
    Condition: Extra
    Properties: {Handler: bootstrap}
  Task:
    Type: AWS::ECS::TaskDefinition
    Properties:
      RuntimePlatform: {CpuArchitecture: X86_64, OperatingSystemFamily: LINUX}
      ContainerDefinitions:
        - Name: agent
          Image: !Ref SandboxImage
`
	s, err := preflight.ParseStack([]byte(tpl), map[string]string{"Reserve": "7"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"One": 7, "Two": 20}; !maps.Equal(s.Reserved, want) || s.ReservedTotal() != 27 {
		t.Fatalf("Reserved = %v, want %v", s.Reserved, want)
	}
	if s.Architecture() != "amd64" {
		t.Fatalf("architecture %q", s.CPUArchitecture)
	}
	s, err = preflight.ParseStack([]byte(tpl), map[string]string{"WithExtra": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if s.ReservedTotal() != 5+20+5 {
		t.Fatalf("Reserved = %v with the optional function", s.Reserved)
	}
}
