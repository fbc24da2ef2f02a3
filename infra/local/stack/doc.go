// Package stack runs the whole application on one machine from template.yaml: DynamoDB
// Local, an S3 endpoint, the ECS endpoint whose tasks are local agent processes, the
// Lambda runtime and the API Gateway emulator, every endpoint wired into every process.
package stack
