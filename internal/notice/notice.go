package notice

import (
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/userid"
)

// Kinds of notice.
const (
	// KindConnect follows a $connect: it tells the new connection the sandbox's state
	// (or why there is none) once the handshake has completed.
	KindConnect = "connect"
	// KindRestart follows a frame queued for a STOPPING sandbox: it waits until the
	// sandbox has stopped, then starts a new one, which drains the queued frames.
	KindRestart = "restart"
	// KindEnsure asks for the user's sandbox on behalf of a frame that found none
	// live: a synchronous invocation, which the Connect function answers with what its
	// Ensure found (an Answer), so the Message function needs no right to start tasks.
	KindEnsure = "ensure"
)

// DefaultRestartWait bounds a restart's wait for a STOPPING sandbox (Notice.Until is
// this far ahead when a restart is requested): the agent's final sync has 120 s (the
// task's stop timeout), and a holder that dies meanwhile loses its lease within a
// lease term after its last heartbeat.
const DefaultRestartWait = 150 * time.Second

// Notice is the internal event the Connect function receives: connect and restart
// notices as asynchronous invocations, ensure notices as synchronous ones. It carries
// no secret.
type Notice struct {
	Kind   string `json:"kind"`
	UserID string `json:"userId"`
	// ConnectionID is the connection to tell (connect, restart), or the one whose frame
	// asked (ensure: for the logs only, and optional).
	ConnectionID string `json:"connectionId"`
	// Stage is the WebSocket stage, the metrics' dimension.
	Stage string `json:"stage,omitempty"`
	// Reason, on a connect notice, is the error frame's reason when the ensure failed.
	Reason string `json:"reason,omitempty"`
	// Until, on a restart notice, bounds the wait for the sandbox to stop (Unix ms); on
	// an ensure notice, when the asker stops waiting for the answer (optional), which
	// bounds the ensure.
	Until int64 `json:"until,omitempty"`
	// Sent, on a connect notice, is when $connect sent it (Unix ms): past the handshake's
	// grace after it, a 410 means the client is gone.
	Sent int64 `json:"sent,omitempty"`
	// Close, on a connect notice with a Reason, closes the connection after the error
	// frame (a connection over its user's cap, never recorded nor counted).
	Close bool `json:"close,omitempty"`
}

// Validate reports what makes n unusable.
func (n Notice) Validate() error {
	switch {
	case n.Kind != KindConnect && n.Kind != KindRestart && n.Kind != KindEnsure:
		return fmt.Errorf("notice: unknown kind %q", n.Kind)
	case n.UserID == "" || (n.ConnectionID == "" && n.Kind != KindEnsure):
		return errors.New("notice: no user or connection")
	case !userid.Valid(n.UserID):
		return errors.New("notice: malformed user id")
	case n.Kind == KindRestart && n.Until == 0:
		return errors.New("notice: restart without a deadline")
	case n.Close && (n.Kind != KindConnect || n.Reason == ""):
		return errors.New("notice: only a connect notice with a reason closes its connection")
	}
	return nil
}

// Envelope is a notice invocation's payload: {"sandgateNotice": {...}}. API Gateway's
// events never carry that key, so a function that receives both kinds of event embeds
// Envelope next to API Gateway's type and tells them apart by Notice alone.
type Envelope struct {
	Notice *Notice `json:"sandgateNotice,omitempty"`
}

// Answer is the Connect function's response to an ensure notice:
// {"sandgateEnsured": {...}}. The key tells an answer apart from anything else the
// function returns (API Gateway's response to $connect, or a Connect that does not
// know ensure notices yet).
type Answer struct {
	Ensured *Ensured `json:"sandgateEnsured,omitempty"`
}

// Ensured is what the Connect function's Ensure found. It carries no secret: neither
// the lease token nor the gateway token. An asker that needs a RUNNING sandbox's
// address and token reads the record itself.
type Ensured struct {
	// State is the sandbox's state (STARTING, RUNNING or STOPPING) when Ensure
	// succeeded.
	State string `json:"state,omitempty"`
	// Generation is the sandbox's lease generation.
	Generation int64 `json:"generation,omitempty"`
	// Started reports that this ensure won the lease and launched the task.
	Started bool `json:"started,omitempty"`
	// Reason is the error frame's reason when Ensure failed: capacity, purging,
	// start_failed or unavailable.
	Reason string `json:"reason,omitempty"`
}

// AnswerOf is the answer to an ensure notice whose Ensure returned res and err.
func AnswerOf(res ensure.Result, err error) Answer {
	if err != nil {
		return Answer{Ensured: &Ensured{Reason: ensure.Reason(err)}}
	}
	return Answer{Ensured: &Ensured{State: string(res.State()), Generation: res.Sandbox.Generation, Started: res.Started}}
}
