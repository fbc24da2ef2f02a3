// Package local holds what only the local stack uses: the development signing secret
// and, in its subpackages, the emulators of API Gateway, Lambda, ECS, S3 and DynamoDB.
package local

// DevSecret signs and verifies URLs in the local stack (its Secrets Manager holds it as
// the signing secret) and sample events. It is public, so it must never be configured
// in AWS.
const DevSecret = "sandgate-local-development-secret-do-not-deploy"
