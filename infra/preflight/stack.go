package preflight

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/infra/local/template"
)

// The template's parameters the checks read.
const (
	ParamSigningSecretName     = "SigningSecretName"
	ParamSandboxImage          = "SandboxImage"
	ParamSubnetIDs             = "SubnetIds"
	ParamBucketName            = "BucketName"
	ParamStorageEndpoint       = "StorageEndpoint"
	ParamStorageRegion         = "StorageRegion"
	ParamStorageCredentials    = "StorageCredentialsSecretArn"
	ParamMaxSandboxes          = "MaxSandboxes"
	ParamSandboxCPU            = "SandboxCpu"
	ParamCapacityProvider      = "CapacityProvider"
	reservedConcurrencyProp    = "ReservedConcurrentExecutions"
	typeTaskDefinition         = "AWS::ECS::TaskDefinition"
	typeServerlessFunction     = "AWS::Serverless::Function"
	typeLambdaFunction         = "AWS::Lambda::Function"
	defaultFargateArchitecture = "X86_64" // RuntimePlatform's default on Fargate
)

// Stack is the stack about to be deployed as the checks see it: the template's
// parameters under the overrides (checked against their constraints, as CloudFormation
// checks them), and what the template's resources say about the sandbox task and the
// functions.
type Stack struct {
	// Region is where the stack is deployed.
	Region string
	// CPUArchitecture is the sandbox task definition's RuntimePlatform.CpuArchitecture
	// (ARM64, X86_64), "" when the template has no task definition running SandboxImage.
	CPUArchitecture string
	// Reserved is the ReservedConcurrentExecutions of each function that sets one
	// (Globals included), by logical id.
	Reserved map[string]int
	// Invalid lists overrides the template refuses, one line each; Missing the
	// parameters without a default that have no value; Unreadable what could not be
	// read from the template. The parameters check reports them.
	Invalid, Missing, Unreadable []string

	params map[string]*template.Parameter
	// data and valid are the template and the overrides it accepted, for what can be
	// read only once the account is known (PullPatterns).
	data  []byte
	valid map[string]string
	// taskDef is the logical id of the task definition running SandboxImage.
	taskDef string
}

// LoadStack reads the template at path with overrides over its defaults.
func LoadStack(path string, overrides map[string]string) (*Stack, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	s, err := ParseStack(data, overrides)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseStack is LoadStack over a template's text.
func ParseStack(data []byte, overrides map[string]string) (*Stack, error) {
	s := &Stack{Reserved: map[string]int{}}
	valid := map[string]string{}
	for k, v := range overrides {
		valid[k] = v
	}
	var doc *template.Document
	// Each refused override is reported and left out, so the checks still run with
	// the others and every refusal is named at once.
	for {
		var err error
		doc, err = template.ParseDocument(data, template.Options{Parameters: valid})
		if err == nil {
			break
		}
		var pe *template.PathError
		name, isParam := "", false
		if errors.As(err, &pe) {
			name, isParam = strings.CutPrefix(pe.Path, "Parameters.")
		}
		if _, overridden := valid[name]; !isParam || !overridden {
			return nil, err
		}
		s.Invalid = append(s.Invalid, fmt.Sprintf("%s: %v", name, pe.Err))
		delete(valid, name)
	}
	s.params, s.data, s.valid = doc.Parameters, data, valid
	for name, p := range doc.Parameters {
		if !p.HasValue {
			s.Missing = append(s.Missing, name)
		}
	}
	sort.Strings(s.Missing)
	sort.Strings(s.Invalid)
	s.readArchitecture(doc)
	s.readReserved(data, doc)
	return s, nil
}

// Value returns a parameter's value, ok false when it has none (or is not declared).
func (s *Stack) Value(name string) (string, bool) {
	p := s.params[name]
	if p == nil || !p.HasValue {
		return "", false
	}
	return p.Value, true
}

// List returns a list parameter's elements.
func (s *Stack) List(name string) []string {
	p := s.params[name]
	if p == nil || !p.HasValue {
		return nil
	}
	return p.List()
}

// Number returns a numeric parameter's value.
func (s *Stack) Number(name string) (float64, bool) {
	v, ok := s.Value(name)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

// Architecture returns the sandbox task's architecture as image platforms name it
// (arm64, amd64), "" when unknown.
func (s *Stack) Architecture() string {
	switch s.CPUArchitecture {
	case "ARM64":
		return "arm64"
	case "X86_64":
		return "amd64"
	}
	return ""
}

// ReservedTotal is the concurrency the stack's functions reserve.
func (s *Stack) ReservedTotal() int {
	n := 0
	for _, r := range s.Reserved {
		n += r
	}
	return n
}

// readArchitecture finds the task definition whose container runs SandboxImage.
func (s *Stack) readArchitecture(doc *template.Document) {
	tds, err := doc.OfType(typeTaskDefinition)
	if err != nil {
		s.Unreadable = append(s.Unreadable, fmt.Sprintf("task definitions: %v", err))
		return
	}
	for _, td := range tds {
		containers := template.Lookup(td.Properties, "ContainerDefinitions")
		if containers == nil || containers.Kind != yaml.SequenceNode {
			continue
		}
		runs := false
		for _, c := range containers.Content {
			for _, ref := range template.Refs(template.Lookup(c, "Image")) {
				runs = runs || ref == ParamSandboxImage
			}
		}
		if !runs {
			continue
		}
		s.taskDef = td.LogicalID
		n := template.Lookup(td.Properties, "RuntimePlatform", "CpuArchitecture")
		if n == nil {
			s.CPUArchitecture = defaultFargateArchitecture
			return
		}
		path := "Resources." + td.LogicalID + ".Properties.RuntimePlatform.CpuArchitecture"
		v, err := doc.Eval(n, path)
		if err != nil {
			s.Unreadable = append(s.Unreadable, fmt.Sprintf("%s: %v", path, err))
			return
		}
		s.CPUArchitecture, _ = v.(string)
		return
	}
}

// readReserved reads each function's ReservedConcurrentExecutions, a serverless
// function's falling back to Globals.Function's.
func (s *Stack) readReserved(data []byte, doc *template.Document) {
	var root yaml.Node
	var global *yaml.Node
	if yaml.Unmarshal(data, &root) == nil && len(root.Content) == 1 {
		global = template.Lookup(root.Content[0], "Globals", "Function", reservedConcurrencyProp)
	}
	for _, typ := range []string{typeServerlessFunction, typeLambdaFunction} {
		fns, err := doc.OfType(typ)
		if err != nil {
			s.Unreadable = append(s.Unreadable, fmt.Sprintf("functions: %v", err))
			return
		}
		for _, fn := range fns {
			n, path := template.Lookup(fn.Properties, reservedConcurrencyProp), "Resources."+fn.LogicalID+".Properties."+reservedConcurrencyProp
			if n == nil && typ == typeServerlessFunction && global != nil {
				n, path = global, "Globals.Function."+reservedConcurrencyProp
			}
			if n == nil {
				continue
			}
			v, err := doc.Eval(n, path)
			if err != nil {
				s.Unreadable = append(s.Unreadable, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			if v == nil {
				continue // AWS::NoValue
			}
			f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
			if err != nil || f < 0 || f != math.Trunc(f) {
				s.Unreadable = append(s.Unreadable, fmt.Sprintf("%s: %v is not a count", path, v))
				continue
			}
			s.Reserved[fn.LogicalID] = int(f)
		}
	}
}

// PullPatterns returns the repository ARNs the sandbox task's execution role may pull
// images from: the Resource of its inline statements that allow ecr:BatchGetImage,
// with the stack's pseudo parameters for account (the deploying account) and Region.
// known is false when the template does not say: no task definition running
// SandboxImage, an execution role that is not the template's own, or managed policies.
func (s *Stack) PullPatterns(account string) (patterns []string, known bool, err error) {
	if s.taskDef == "" {
		return nil, false, nil
	}
	doc, err := template.ParseDocument(s.data, template.Options{Parameters: s.valid, Resolver: template.MapResolver{Refs: map[string]string{
		"AWS::Region": s.Region, "AWS::AccountId": account, "AWS::Partition": Partition(s.Region), "AWS::URLSuffix": "amazonaws.com"}}})
	if err != nil {
		return nil, false, err
	}
	td := doc.Resources[s.taskDef]
	refs := template.Refs(template.Lookup(td.Properties, "ExecutionRoleArn"))
	if len(refs) != 1 {
		return nil, false, nil
	}
	role := doc.Resources[refs[0]]
	if role == nil || role.Type != "AWS::IAM::Role" || template.Lookup(role.Properties, "ManagedPolicyArns") != nil {
		return nil, false, nil
	}
	base := "Resources." + role.LogicalID + ".Properties.Policies"
	policies := template.Lookup(role.Properties, "Policies")
	if policies == nil || policies.Kind != yaml.SequenceNode {
		return nil, true, nil
	}
	for i, p := range policies.Content {
		list := template.Lookup(p, "PolicyDocument", "Statement")
		statements := []*yaml.Node{list}
		if list != nil && list.Kind == yaml.SequenceNode {
			statements = list.Content
		}
		for j, st := range statements {
			path := fmt.Sprintf("%s[%d].PolicyDocument.Statement[%d]", base, i, j)
			// Effect and Action first: other statements' resources may name what only
			// the deployed stack knows (a log group's ARN).
			effect, err := doc.Eval(template.Lookup(st, "Effect"), path+".Effect")
			if err != nil {
				return nil, false, err
			}
			action, err := doc.Eval(template.Lookup(st, "Action"), path+".Action")
			if err != nil {
				return nil, false, err
			}
			if effect != "Allow" || !matchesAny(policyStrings(action), "ecr:BatchGetImage", true) {
				continue
			}
			resource, err := doc.Eval(template.Lookup(st, "Resource"), path+".Resource")
			if err != nil {
				return nil, false, err
			}
			patterns = append(patterns, policyStrings(resource)...)
		}
	}
	return patterns, true, nil
}

// Partition is the AWS partition of a region.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// policyStrings returns a policy element written as one string or a list of them.
func policyStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// matchesAny reports whether one of patterns (IAM's * and ? wildcards) matches s,
// ignoring case when fold is set (actions; resources are case-sensitive).
func matchesAny(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if wildcardMatch(p, s) {
			return true
		}
	}
	return false
}

// wildcardMatch matches s against an IAM pattern: * any run of characters, ? one.
func wildcardMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
