// Package admin is the operator's command (make admin ARGS="…"): list, inspect, stop,
// revoke, delete-user, reconcile and import-bucket, against a deployed stack (found
// through CloudFormation with the operator's own credentials) or the local stack
// (its .sandgate/aws.env), on internal/admin.
package admin
