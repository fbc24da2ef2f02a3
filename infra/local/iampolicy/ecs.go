package iampolicy

import (
	"encoding/json"
	"sort"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// ECSTargetPrefix starts every ECS X-Amz-Target header (JSON 1.1).
const ECSTargetPrefix = "AmazonEC2ContainerServiceV20141113."

// ECS and IAM condition keys.
const (
	keyECSCluster      = "ecs:cluster"
	keyECSCreateAction = "ecs:CreateAction"
	keyPassedToService = "iam:PassedToService"
)

// ECSTaskDefinition is a task definition as RunTask resolves it: its full ARN (with
// revision) and the roles it passes.
type ECSTaskDefinition struct {
	ARN              string
	TaskRoleARN      string
	ExecutionRoleARN string
}

// ECSResolver resolves RunTask's taskDefinition (family, family:revision or ARN).
type ECSResolver func(taskDefinition string) (ECSTaskDefinition, error)

// ECS derives what an ECS call asks (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html):
// RunTask needs ecs:RunTask on the task definition's ARN with ecs:cluster, plus
// ecs:TagResource on the cluster's task ARNs (arn:…:task/<cluster>/*) with
// ecs:CreateAction=RunTask, aws:RequestTag/… and aws:TagKeys when it passes tags, plus
// iam:PassRole on each role the task will use (the definition's task and execution
// roles, or the overrides') with iam:PassedToService=ecs-tasks.amazonaws.com.
// DescribeTasks and StopTask need their action on each task ARN with ecs:cluster;
// ListTasks needs ecs:ListTasks on "*" with ecs:cluster. resolve is used by RunTask only.
func ECS(env Env, c Call, resolve ECSResolver) ([]identity.Request, error) {
	target := c.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, ECSTargetPrefix)
	if !ok {
		return nil, malformed("X-Amz-Target %q is not ECS's", target)
	}
	var in struct {
		Cluster        string
		TaskDefinition string
		Task           string
		Tasks          []string
		Tags           []struct{ Key, Value string }
		Overrides      struct {
			TaskRoleArn      string
			ExecutionRoleArn string
		}
		Clusters []string
	}
	if len(c.Body) > 0 {
		if err := json.Unmarshal(c.Body, &in); err != nil {
			return nil, malformed("%s: body is not JSON: %v", op, err)
		}
	}
	clusterARN, clusterName := ecsCluster(env, in.Cluster)
	withCluster := map[string][]string{keyECSCluster: {clusterARN}}
	switch op {
	case "RunTask":
		if resolve == nil {
			return nil, malformed("RunTask needs a task definition resolver")
		}
		if in.TaskDefinition == "" {
			return nil, malformed("RunTask without taskDefinition")
		}
		td, err := resolve(in.TaskDefinition)
		if err != nil {
			return nil, err
		}
		out := []identity.Request{env.request(c.TLS, "ecs:RunTask", td.ARN, withCluster)}
		if len(in.Tags) > 0 {
			tags := map[string][]string{keyECSCreateAction: {"RunTask"}}
			var keys []string
			for _, t := range in.Tags {
				tags[keyRequestTag+t.Key] = []string{t.Value}
				keys = append(keys, t.Key)
			}
			sort.Strings(keys)
			tags[keyTagKeys] = keys
			out = append(out, env.request(c.TLS, "ecs:TagResource", env.arn("ecs", env.Region, env.Account, "task/"+clusterName+"/*"), tags))
		}
		taskRole, execRole := td.TaskRoleARN, td.ExecutionRoleARN
		if in.Overrides.TaskRoleArn != "" {
			taskRole = in.Overrides.TaskRoleArn
		}
		if in.Overrides.ExecutionRoleArn != "" {
			execRole = in.Overrides.ExecutionRoleArn
		}
		out = append(out, PassRole(env, c.TLS, ECSTasksService, taskRole, execRole)...)
		return out, nil
	case "DescribeTasks", "StopTask":
		ids := in.Tasks
		if op == "StopTask" {
			ids = []string{in.Task}
		}
		var out []identity.Request
		for _, id := range ids {
			if id == "" {
				return nil, malformed("%s names an empty task", op)
			}
			out = append(out, env.request(c.TLS, "ecs:"+op, ecsTaskARN(env, clusterName, id), withCluster))
		}
		if len(out) == 0 {
			return nil, malformed("%s names no task", op)
		}
		return out, nil
	case "ListTasks":
		return []identity.Request{env.request(c.TLS, "ecs:ListTasks", "*", withCluster)}, nil
	case "DescribeTaskDefinition", "ListTaskDefinitions", "ListClusters":
		return []identity.Request{env.request(c.TLS, "ecs:"+op, "*", nil)}, nil
	case "DescribeClusters":
		names := in.Clusters
		if len(names) == 0 {
			names = []string{"default"}
		}
		var out []identity.Request
		for _, n := range names {
			arn, _ := ecsCluster(env, n)
			out = append(out, env.request(c.TLS, "ecs:DescribeClusters", arn, nil))
		}
		return out, nil
	}
	return nil, unsupported("ecs:"+op, "*", "the local stack does not derive ECS %s", op)
}

// PassRole derives iam:PassRole on each role (empty ones skipped, each once) with
// iam:PassedToService=service (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html).
func PassRole(env Env, tls bool, service string, roleARNs ...string) []identity.Request {
	var out []identity.Request
	seen := map[string]bool{}
	for _, r := range roleARNs {
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, env.request(tls, "iam:PassRole", r, map[string][]string{keyPassedToService: {service}}))
	}
	return out
}

// ecsCluster returns a cluster's ARN and name from a name, an ARN or "" (default).
func ecsCluster(env Env, c string) (arn, name string) {
	if c == "" {
		c = "default"
	}
	if strings.HasPrefix(c, "arn:") {
		_, name, _ = strings.Cut(c, ":cluster/")
		return c, name
	}
	return env.arn("ecs", env.Region, env.Account, "cluster/"+c), c
}

// ecsTaskARN returns a task's ARN from its id or ARN.
func ecsTaskARN(env Env, cluster, task string) string {
	if strings.HasPrefix(task, "arn:") {
		return task
	}
	return env.arn("ecs", env.Region, env.Account, "task/"+cluster+"/"+task)
}
