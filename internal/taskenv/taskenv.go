package taskenv

// Per-task variables, set by the launcher as container overrides. None is a secret:
// RunTask parameters reach CloudTrail, so the agent makes its own gateway token.
const (
	UserID             = "SANDGATE_USER_ID"             // the user this sandbox belongs to
	LeaseToken         = "SANDGATE_LEASE_TOKEN"         // fencing token of the lease that started the task
	Generation         = "SANDGATE_GENERATION"          // the lease's generation, written into .last-sync
	Table              = "SANDGATE_TABLE"               // DynamoDB table with the lease, connections and inbox
	Bucket             = "SANDGATE_BUCKET"              // S3 or R2 bucket holding the user's files
	Prefix             = "SANDGATE_PREFIX"              // the user's key prefix, users/<userId>/
	ManagementEndpoint = "SANDGATE_MANAGEMENT_ENDPOINT" // API Gateway management API of the WebSocket stage
	// PoolID marks a warm pool task, started with no user: its pool item's id (the
	// RunTask clientToken). Such a task has no UserID, LeaseToken, Generation or Prefix
	// until a claim hands it a user (internal/agent's pool mode).
	PoolID = "SANDGATE_POOL_ID"
)

// Keys of the tags every sandbox task carries, for reconciliation by cleanup.
const (
	TagUserID = "sandgate:userId"
	TagLease  = "sandgate:generation"
	// TagPool names a pool task's pool item.
	TagPool = "sandgate:pool"
)

// UserPrefix returns the storage prefix of userID's files.
func UserPrefix(userID string) string { return "users/" + userID + "/" }
