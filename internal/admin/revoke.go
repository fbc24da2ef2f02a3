package admin

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Revocation is what Revoke did.
type Revocation struct {
	UserID string `json:"userId"`
	// NotBefore is the user's revocation: URLs that may have been signed before it are
	// refused on the WebSocket and the HTTP API (auth.MayPredate).
	NotBefore time.Time `json:"notBefore"`
	// Closed are the connections closed.
	Closed []string `json:"closed"`
}

// Revoke refuses userID's URLs signed before now and closes every connection of the
// user: those recorded and those counted against the user's cap (a connect still in
// its handshake), again until RevokeSettle has passed, since a connect authorized just
// before the revocation was written may record its connection a moment later. No
// sandbox is started for a refused URL, so no warm pool task is claimed for the user;
// the sandbox itself stops once idle (or with Stop).
func (a *Admin) Revoke(ctx context.Context, userID string) (Revocation, error) {
	r, err := a.revoke(ctx, userID)
	a.Audit.Record(ctx, "revoke", userID, err, "notBefore", r.NotBefore, "closed", len(r.Closed))
	return r, err
}

func (a *Admin) revoke(ctx context.Context, userID string) (Revocation, error) {
	if err := checkUser(userID); err != nil {
		return Revocation{}, err
	}
	r := Revocation{UserID: userID, Closed: []string{}}
	nb, err := a.Store.Revoke(ctx, userID, a.now())
	if err != nil {
		return r, fmt.Errorf("revoke %s: %w", userID, err)
	}
	r.NotBefore = nb
	closed := map[string]bool{}
	settle := time.Now().Add(orDefault(a.RevokeSettle, DefaultRevokeSettle))
	err = a.wait(ctx, orDefault(a.RevokeSettle, DefaultRevokeSettle)*2, func() (bool, error) {
		ids, err := a.connectionIDs(ctx, userID)
		if err != nil {
			return false, err
		}
		for _, id := range ids {
			if closed[id] {
				continue
			}
			if err := a.Conns.Close(ctx, id); err != nil {
				return false, err
			}
			closed[id] = true
		}
		return time.Now().After(settle), nil
	})
	for id := range closed {
		r.Closed = append(r.Closed, id)
	}
	sort.Strings(r.Closed)
	if err != nil {
		return r, fmt.Errorf("revoke %s: the revocation holds, closing connections failed: %w", userID, err)
	}
	return r, nil
}

// connectionIDs returns the user's connections: recorded, or counted against the cap.
func (a *Admin) connectionIDs(ctx context.Context, userID string) ([]string, error) {
	conns, err := a.Store.Connections(ctx, userID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	for _, c := range conns {
		seen[c.ConnectionID] = true
		ids = append(ids, c.ConnectionID)
	}
	acc, err := a.Store.Access(ctx, userID)
	if err == nil {
		for id := range acc.Conns {
			if !seen[id] {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}
