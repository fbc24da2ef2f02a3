package frames

import (
	"bytes"
	"encoding/json"
	"time"
)

// Frame types.
const (
	TypePrefix = "sandgate."
	TypeStatus = "sandgate.status"
	TypeError  = "sandgate.error"
)

// States reported in status frames, in the order a cold start goes through them.
const (
	Starting  = "starting"  // the sandbox is being launched; frames are queued
	Restoring = "restoring" // the user's files are being restored; Progress says how far
	Ready     = "ready"     // the workload is serving; queued frames have been delivered
	Stopping  = "stopping"  // the sandbox is syncing and stopping; reconnect to start it again
	// Saved is not a step of a start: a sync completed and stored the workspace, and
	// Receipt says what is stored. Sent after every sync that wrote a marker (one
	// that found nothing to store sends nothing), the final sync of a stop included.
	Saved = "saved"
)

// Reasons carried by error frames.
const (
	ReasonCapacity    = "capacity"     // every sandbox slot is taken; retry later
	ReasonRateLimited = "rate_limited" // the user sent frames faster than allowed; the frame was not delivered
	ReasonTooLarge    = "too_large"    // the frame exceeds the maximum size; it was not delivered
	ReasonInboxFull   = "inbox_full"   // too many frames are queued while the sandbox starts; it was not queued
	ReasonStartFailed = "start_failed" // the sandbox could not be started
	ReasonUnavailable = "unavailable"  // a dependency failed; the frame was not delivered, retry
	ReasonNoAnswer    = "no_answer"    // the sandbox took the frame but did not answer in time; it may have been delivered
	ReasonPurging     = "purging"      // the user's data is being deleted; retry later
	// ReasonTooManyConnections: the user holds as many connections as allowed; this one
	// is closed after the frame.
	ReasonTooManyConnections = "too_many_connections"
	// ReasonConnectRate: the user connects faster than allowed; the handshake is refused
	// (429, this frame as its body).
	ReasonConnectRate = "connect_rate_limited"
)

// Progress reports a restore in flight.
type Progress struct {
	Files      int64 `json:"files"`
	Bytes      int64 `json:"bytes"`
	TotalFiles int64 `json:"totalFiles,omitempty"`
	TotalBytes int64 `json:"totalBytes,omitempty"`
}

// Receipt is a durability receipt: what the user's last completed sync stored.
// GET /status answers the same object as its "receipt".
type Receipt struct {
	// Time is when that sync began reading the workspace: every change made before
	// it is stored. A crash loses at most what changed after it.
	Time time.Time `json:"time"`
	// Generation is the sandbox's lease generation that stored it.
	Generation int64 `json:"generation"`
	// Files and Bytes count the files and symbolic links stored.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Digest is the SHA-256 (hex) of the stored manifest: one line
	// "<sha256 of the content>  <path>\n" per file, in byte order of the paths, as
	// sha256sum prints them; see docs/ARCHITECTURE.md, Storage sync.
	Digest string `json:"digest"`
}

// Frame is one platform frame.
type Frame struct {
	Type     string    `json:"type"`
	State    string    `json:"state,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Message  string    `json:"message,omitempty"`
	Queued   int       `json:"queued,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Receipt  *Receipt  `json:"receipt,omitempty"`
}

// Status returns a status frame for state.
func Status(state string) Frame { return Frame{Type: TypeStatus, State: state} }

// SavedFrame returns the status frame that carries a durability receipt.
func SavedFrame(r Receipt) Frame { return Frame{Type: TypeStatus, State: Saved, Receipt: &r} }

// Error returns an error frame; message is for people, reason for programs.
func Error(reason, message string) Frame {
	return Frame{Type: TypeError, Reason: reason, Message: message}
}

// Bytes encodes f. A Frame always encodes, so the error is not returned.
func (f Frame) Bytes() []byte {
	b, _ := json.Marshal(f)
	return b
}

// IsPlatform reports whether data is a platform frame (a JSON object whose type starts
// with "sandgate."), so a client library can tell them from the workload's frames.
func IsPlatform(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	var f struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(data, &f) == nil && len(f.Type) > len(TypePrefix) && f.Type[:len(TypePrefix)] == TypePrefix
}
