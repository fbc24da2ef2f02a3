// Package funcurl is what both sides of an IAM-authenticated Lambda function URL need:
// a client that signs its requests with SigV4 for the service "lambda", and, in the
// function, the caller Lambda verified (requestContext.authorizer.iam).
package funcurl
