// Package stackref finds the deployed stack an operator's command works on: its name,
// region and profile from flags or samconfig.toml (as sam deploy wrote them), the AWS
// configuration of the operator's own credentials, and the stack's outputs and
// parameters as CloudFormation reports them. make undeploy and make admin share it.
package stackref
