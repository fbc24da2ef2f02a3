package iampolicy

import (
	"github.com/sandgate/sandgate/infra/local/identity"
)

// What AWS services ask on a role's behalf, with no request of the product's own:
// the stack asks these when it does what Lambda and ECS would do with a role.

// LogsWrite is what Lambda (a function's execution role) and ECS's awslogs driver (a
// task's execution role) ask to write to a log stream
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatchlogs.html):
// logs:CreateLogStream and logs:PutLogEvents on
// arn:aws:logs:<region>:<account>:log-group:<group>:log-stream:<stream>.
func LogsWrite(env Env, group, stream string) []identity.Request {
	arn := env.arn("logs", env.Region, env.Account, "log-group:"+group+":log-stream:"+stream)
	return []identity.Request{
		env.request(true, "logs:CreateLogStream", arn, nil),
		env.request(true, "logs:PutLogEvents", arn, nil),
	}
}

// LambdaNetworkInterfaces is what Lambda asks with a VPC function's execution role to
// attach it to its subnets (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html):
// ec2:DescribeNetworkInterfaces and ec2:DescribeSubnets on "*", and
// ec2:CreateNetworkInterface on the new interface (eniID), each subnet and each
// security group, then ec2:AssignPrivateIpAddresses, ec2:UnassignPrivateIpAddresses and
// ec2:DeleteNetworkInterface on the interface.
func LambdaNetworkInterfaces(env Env, eniID string, subnets, securityGroups []string) []identity.Request {
	region := map[string][]string{"ec2:Region": {env.Region}}
	eni := env.arn("ec2", env.Region, env.Account, "network-interface/"+eniID)
	out := []identity.Request{
		env.request(true, "ec2:DescribeNetworkInterfaces", "*", region),
		env.request(true, "ec2:DescribeSubnets", "*", region),
		env.request(true, "ec2:CreateNetworkInterface", eni, region),
	}
	for _, s := range subnets {
		out = append(out, env.request(true, "ec2:CreateNetworkInterface", env.arn("ec2", env.Region, env.Account, "subnet/"+s), region))
	}
	for _, g := range securityGroups {
		out = append(out, env.request(true, "ec2:CreateNetworkInterface", env.arn("ec2", env.Region, env.Account, "security-group/"+g), region))
	}
	for _, a := range []string{"ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses", "ec2:DeleteNetworkInterface"} {
		out = append(out, env.request(true, a, eni, region))
	}
	return out
}

// ECRPull is what ECS asks with a task's execution role to pull its image from a
// private repository (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html):
// ecr:GetAuthorizationToken on "*", then ecr:BatchCheckLayerAvailability,
// ecr:GetDownloadUrlForLayer and ecr:BatchGetImage on the repository.
func ECRPull(env Env, repository string) []identity.Request {
	arn := env.arn("ecr", env.Region, env.Account, "repository/"+repository)
	return []identity.Request{
		env.request(true, "ecr:GetAuthorizationToken", "*", nil),
		env.request(true, "ecr:BatchCheckLayerAvailability", arn, nil),
		env.request(true, "ecr:GetDownloadUrlForLayer", arn, nil),
		env.request(true, "ecr:BatchGetImage", arn, nil),
	}
}
