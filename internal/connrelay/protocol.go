package connrelay

import "github.com/sandgate/sandgate/internal/state"

// PathBatch is where a sandbox sends its operations.
const PathBatch = "/batch"

// Operations on a connection, as the management API has them.
const (
	OpPost   = "post"   // PostToConnection
	OpGet    = "get"    // GetConnection
	OpDelete = "delete" // DeleteConnection
)

// Limits of one batch: a function URL's request is at most 6 MB, base64 makes data a
// third larger, and a WebSocket message is at most 128 KB.
const (
	MaxOps       = 32
	MaxBatchData = 3 << 20
	MaxDataBytes = state.DefaultMaxMessageBytes
)

// Request is one batch: operations on connections of one user, done in order for each
// connection.
type Request struct {
	UserID string      `json:"userId"`
	Ops    []Operation `json:"ops"`
}

// Operation is one call of the management API.
type Operation struct {
	Op           string `json:"op"`
	ConnectionID string `json:"connectionId"`
	// Data is a post's frame (base64 in JSON).
	Data []byte `json:"data,omitempty"`
}

// Response answers a Request with one Result per operation, in order.
type Response struct {
	Results []Result `json:"results"`
}

// Result is one operation's outcome, as an HTTP status: 200 done; 410 the connection is
// gone (or is not the user's: the relay never says which); 413 the frame is too large;
// 429 API Gateway kept throttling; 502 API Gateway failed otherwise.
type Result struct {
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Refusal is the body of an answer other than 200: the whole batch was refused.
type Refusal struct {
	Error string `json:"error"`
}

// Error codes of a Refusal.
const (
	CodeRefused     = "refused"     // 403: the caller is not the user's recorded task
	CodeBadRequest  = "bad_request" // 400
	CodeUnavailable = "unavailable" // 503: the table could not be read
)
