package stack

import (
	"fmt"
	"strings"

	"github.com/sandgate/sandgate/infra/local"
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

func (r *resolver) GetAtt(id, attr string) (string, error) {
	if attr != "Arn" {
		return "", fmt.Errorf("%w: !GetAtt %s.%s", template.ErrUnresolved, id, attr)
	}
	if strings.HasSuffix(id, "Function") {
		return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", Region, AccountID, id), nil
	}
	return fmt.Sprintf("arn:aws:local:%s:%s:%s/%s", Region, AccountID, StackName, id), nil
}

// Dynamic resolves Secrets Manager references: the signing secrets become the local
// development secret; nothing else is known locally.
func (r *resolver) Dynamic(ref string) (string, error) {
	if strings.HasPrefix(ref, "resolve:secretsmanager:") && strings.HasSuffix(ref, ":SecretString") &&
		strings.Contains(ref, "signing") {
		return local.DevSecret, nil
	}
	return "", fmt.Errorf("%w: {{%s}} (the local stack has no Secrets Manager)", template.ErrUnresolved, ref)
}

// taskDefinitionARN is the ARN ecslocal gives the first revision of family.
func taskDefinitionARN(family string) string {
	return fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:1", Region, AccountID, family)
}
