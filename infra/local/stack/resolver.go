package stack

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/template"
)

// sandboxTaskDefinition is the template's logical id of the sandbox's task definition.
const sandboxTaskDefinition = "SandboxTaskDefinition"

// resolver answers the template's references with the local stack's names, as
// CloudFormation would with physical ones.
type resolver struct {
	stack *Stack
	// taskDef is the sandbox task definition's ARN once its family is known (the first
	// read of the template); before, references to it resolve to a placeholder.
	taskDef string
	// types maps logical ids to resource types; functionNames the functions that set
	// FunctionName (known after the first read) to it.
	types         map[string]string
	functionNames map[string]string
	// functionURLs maps a function's logical id to its function URL, chosen before the
	// template is read with every reference answered (see pickFunctionURLs); before,
	// <Function>Url.FunctionUrl resolves to a placeholder.
	functionURLs map[string]string
	// secrets answers dynamic references.
	secrets *secretslocal.Server
}

var _ template.Resolver = (*resolver)(nil)

func (r *resolver) Ref(id string) (string, error) {
	s := r.stack
	switch id {
	case "AWS::Region":
		return Region, nil
	case "AWS::AccountId":
		return AccountID, nil
	case "AWS::StackName":
		return StackName, nil
	case "AWS::Partition":
		return "aws", nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	case "Table":
		return s.Table, nil
	case "Cluster":
		return s.Cluster, nil
	case "WebSocketApi":
		return APIID, nil
	case sandboxTaskDefinition:
		if r.taskDef == "" {
			return "pending-task-definition", nil
		}
		return r.taskDef, nil
	}
	if strings.HasPrefix(id, "AWS::") {
		return "", fmt.Errorf("%w: pseudo parameter %s", template.ErrUnresolved, id)
	}
	// Functions are named by their logical id in the local runtime; other resources
	// get a stack-scoped physical name.
	if strings.HasSuffix(id, "Function") {
		return id, nil
	}
	return StackName + "-" + id, nil
}

// GetAtt answers .Arn as CloudFormation does for each resource type the template
// uses, with the local stack's physical names.
func (r *resolver) GetAtt(id, attr string) (string, error) {
	if fn, ok := strings.CutSuffix(id, "Url"); ok && attr == "FunctionUrl" {
		// SAM's AWS::Lambda::Url of a function with a FunctionUrlConfig.
		if u := r.functionURLs[fn]; u != "" {
			return u, nil
		}
		return "http://pending-function-url.invalid/", nil
	}
	if attr != "Arn" {
		return "", fmt.Errorf("%w: !GetAtt %s.%s", template.ErrUnresolved, id, attr)
	}
	s := r.stack
	switch r.types[id] {
	case "AWS::IAM::Role":
		return fmt.Sprintf("arn:aws:iam::%s:role/%s", AccountID, RoleName(id)), nil
	case "AWS::DynamoDB::Table":
		return fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", Region, AccountID, s.Table), nil
	case "AWS::ECS::Cluster":
		return fmt.Sprintf("arn:aws:ecs:%s:%s:cluster/%s", Region, AccountID, s.Cluster), nil
	case "AWS::Logs::LogGroup":
		name, _ := r.Ref(id)
		return fmt.Sprintf("arn:aws:logs:%s:%s:log-group:%s:*", Region, AccountID, name), nil
	case "AWS::Events::Rule":
		return ruleARN(id), nil
	case "AWS::SNS::Topic":
		return fmt.Sprintf("arn:aws:sns:%s:%s:%s-%s", Region, AccountID, StackName, id), nil
	case "AWS::Serverless::Function", "AWS::Lambda::Function":
		name := id
		if n := r.functionNames[id]; n != "" {
			name = n
		}
		return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", Region, AccountID, name), nil
	}
	return fmt.Sprintf("arn:aws:local:%s:%s:%s/%s", Region, AccountID, StackName, id), nil
}

// Dynamic resolves {{resolve:secretsmanager:<id>:SecretString[:<json key>]}} from the
// stack's Secrets Manager, as CloudFormation resolves it at deploy time.
func (r *resolver) Dynamic(ref string) (string, error) {
	rest, ok := strings.CutPrefix(ref, "resolve:secretsmanager:")
	if !ok || r.secrets == nil {
		return "", fmt.Errorf("%w: {{%s}}", template.ErrUnresolved, ref)
	}
	// The id may be an ARN, itself full of colons: the fields follow ":SecretString".
	id, fields, ok := strings.Cut(rest, ":SecretString")
	if !ok {
		return "", fmt.Errorf("%w: {{%s}}: only SecretString references are resolved locally", template.ErrUnresolved, ref)
	}
	v, found := r.secrets.Current(id)
	if !found {
		return "", fmt.Errorf("%w: {{%s}}: no secret %s in the local Secrets Manager", template.ErrUnresolved, ref, id)
	}
	key, _, _ := strings.Cut(strings.TrimPrefix(fields, ":"), ":")
	if key == "" {
		return v, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return "", fmt.Errorf("%w: {{%s}}: the secret is not a JSON object", template.ErrUnresolved, ref)
	}
	s, ok := m[key].(string)
	if !ok {
		return "", fmt.Errorf("%w: {{%s}}: no string %q in the secret", template.ErrUnresolved, ref, key)
	}
	return s, nil
}

// taskDefinitionARN is the ARN ecslocal gives the first revision of family.
func taskDefinitionARN(family string) string {
	return fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:1", Region, AccountID, family)
}
