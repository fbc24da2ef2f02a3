package secretslocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// Dev is a Secrets Manager on loopback for one function run without the local stack
// (make invoke, tests of a single bootstrap): functions read their secrets at run
// time, so even a function that calls nothing else needs one to start.
type Dev struct {
	*Server
	// Env is what the function needs to reach it: the endpoint, the region and the
	// credentials of a session it accepts (any signed call by them is allowed).
	Env map[string]string
	srv *http.Server
}

// StartDev serves secrets (name → SecretString) until Close.
func StartDev(secrets map[string]string) (*Dev, error) {
	const account, region = "000000000000", "us-east-1"
	a := identity.New(account, region)
	if _, err := a.AddRole(identity.Role{Name: "dev-function"}); err != nil {
		return nil, err
	}
	creds, _, err := a.Issue(identity.SessionSpec{RoleARN: a.RoleARN("dev-function"), SessionName: "dev-function"})
	if err != nil {
		return nil, err
	}
	d := &Dev{Server: New(a, nil, nil)}
	for name, v := range secrets {
		if _, err := d.Put(name, v); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev secrets manager: %w", err)
	}
	d.srv = &http.Server{Handler: d.Server, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.Log.Error("dev secrets manager stopped", "error", err.Error())
		}
	}()
	d.Env = creds.Env()
	d.Env["AWS_REGION"] = region
	d.Env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://" + ln.Addr().String()
	return d, nil
}

// Close stops serving.
func (d *Dev) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.srv.Shutdown(ctx)
}
