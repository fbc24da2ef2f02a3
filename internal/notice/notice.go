package notice

import (
	"errors"
	"fmt"
	"time"

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
)

// DefaultRestartWait bounds a restart's wait for a STOPPING sandbox (Notice.Until is
// this far ahead when a restart is requested): the agent's final sync has 120 s (the
// task's stop timeout), and a holder that dies meanwhile loses its lease within a
// lease term after its last heartbeat.
const DefaultRestartWait = 150 * time.Second

// Notice is the internal event the Connect function receives as an asynchronous
// invocation. It carries no secret.
type Notice struct {
	Kind         string `json:"kind"`
	UserID       string `json:"userId"`
	ConnectionID string `json:"connectionId"`
	// Stage is the WebSocket stage, the metrics' dimension.
	Stage string `json:"stage,omitempty"`
	// Reason, on a connect notice, is the error frame's reason when the ensure failed.
	Reason string `json:"reason,omitempty"`
	// Until, on a restart notice, bounds the wait for the sandbox to stop (Unix ms).
	Until int64 `json:"until,omitempty"`
}

// Validate reports what makes n unusable.
func (n Notice) Validate() error {
	switch {
	case n.Kind != KindConnect && n.Kind != KindRestart:
		return fmt.Errorf("notice: unknown kind %q", n.Kind)
	case n.UserID == "" || n.ConnectionID == "":
		return errors.New("notice: no user or connection")
	case !userid.Valid(n.UserID):
		return errors.New("notice: malformed user id")
	case n.Kind == KindRestart && n.Until == 0:
		return errors.New("notice: restart without a deadline")
	}
	return nil
}

// Envelope is a notice invocation's payload: {"sandgateNotice": {...}}. API Gateway's
// events never carry that key, so a function that receives both kinds of event embeds
// Envelope next to API Gateway's type and tells them apart by Notice alone.
type Envelope struct {
	Notice *Notice `json:"sandgateNotice,omitempty"`
}
