package agentapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/sandgate/sandgate/internal/userid"
)

// ClaimPath is where a waiting pool task takes its claim: the user it is to serve,
// with the lease the claimer took. Only a pool task's agent serves it, only until its
// first claim, and only to a caller that shows the claim secret it registered.
const ClaimPath = "/v1/claim"

// Errors of a claim, as the claimer sees them.
var (
	// ErrClaimRefused: the agent refused the claim (wrong secret, claimed already, or
	// not a pool task): it will not serve this user.
	ErrClaimRefused = errors.New("pool task refused the claim")
)

// Claim is what a claimer hands a pool task: nothing it believes until the credential
// vendor, checking the user's record against the task, hands it the user's
// credentials.
type Claim struct {
	UserID     string `json:"userId"`
	Generation int64  `json:"generation"`
	LeaseToken string `json:"leaseToken"`
}

// LogValue leaves the lease token out of logs.
func (c Claim) LogValue() slog.Value {
	return slog.GroupValue(slog.String("userId", c.UserID), slog.Int64("generation", c.Generation))
}

// Validate checks a claim's shape.
func (c Claim) Validate() error {
	switch {
	case !userid.Valid(c.UserID):
		return errors.New("claim: no valid user id")
	case c.Generation < 1:
		return errors.New("claim: no generation")
	case c.LeaseToken == "" || len(c.LeaseToken) > 256:
		return errors.New("claim: no lease token")
	}
	return nil
}

// NewClaimServer returns a waiting pool task's HTTP handler: the health check, and
// POST ClaimPath with the bearer secret, whose first well-formed claim is handed to
// claimed (answered 202 Accepted); any later one is 409, a wrong secret 401. claimed
// must not block.
func NewClaimServer(secret string, claimed func(Claim)) http.Handler {
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST "+ClaimPath, func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(secret)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var c Claim
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil || c.Validate() != nil {
			http.Error(w, "bad claim", http.StatusBadRequest)
			return
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			http.Error(w, "claimed already", http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		claimed(c)
	})
	return mux
}

// Claim hands a waiting pool task at endpoint its claim, showing secret. nil means the
// agent took it; ErrClaimRefused that it will not; ErrUnavailable that it could not
// be reached or did not answer (ErrNoAnswer too when the claim was sent: it may have
// taken it).
func (c *Client) Claim(ctx context.Context, endpoint, secret string, claim Claim) error {
	body, err := json.Marshal(claim)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	err = c.send(ctx, http.MethodPost, endpoint, ClaimPath, secret, "", bytes.NewReader(body))
	var st statusError
	if errors.As(err, &st) && (st.code == http.StatusUnauthorized || st.code == http.StatusConflict || st.code == http.StatusBadRequest) {
		return fmt.Errorf("%w: status %d", ErrClaimRefused, st.code)
	}
	return err
}
