// Package state keeps sandgate's per-user state in one DynamoDB table: the sandbox
// lease (a lock with a fencing token), the capacity counter, connections and the inbox.
package state
