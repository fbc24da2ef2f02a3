package frames

import (
	"bytes"
	"encoding/json"
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

// Frame is one platform frame.
type Frame struct {
	Type     string    `json:"type"`
	State    string    `json:"state,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Message  string    `json:"message,omitempty"`
	Queued   int       `json:"queued,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
}

// Status returns a status frame for state.
func Status(state string) Frame { return Frame{Type: TypeStatus, State: state} }

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
