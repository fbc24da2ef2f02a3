// Command sign prints a signed WebSocket URL for one user: `make sign USER=user_abc`.
//
// It signs with the first secret of SIGNING_SECRETS, or with the public local
// development secret when the variable is unset (which only the local stack accepts).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/userid"
)

// DefaultEndpoint is the local stack's WebSocket stage.
const DefaultEndpoint = "ws://127.0.0.1:8700/local"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sign:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	user := fs.String("user", "", "user id to sign, user_<letters or digits>")
	endpoint := fs.String("endpoint", envOr("SANDGATE_ENDPOINT", DefaultEndpoint), "wss:// or ws:// URL of the WebSocket stage")
	ttl := fs.Duration("ttl", auth.DefaultTTL, "how long the URL stays valid (at most the verifier's maximum lifetime)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !userid.Valid(*user) {
		return fmt.Errorf("user id %q is not of the form user_<1-64 letters or digits>; run: make sign USER=user_abc", *user)
	}
	secret := local.DevSecret
	if list, ok := os.LookupEnv("SIGNING_SECRETS"); ok {
		secrets, err := auth.ParseSecrets(list)
		if err != nil {
			return fmt.Errorf("SIGNING_SECRETS: %w", err)
		}
		secret = secrets[0]
	} else {
		fmt.Fprintln(os.Stderr, "sign: SIGNING_SECRETS is unset; signing with the local development secret (the local stack only)")
	}
	if *ttl > auth.DefaultMaxLifetime {
		return errors.New("ttl exceeds the default maximum lifetime of 15m; the verifier would refuse the URL")
	}
	s, err := auth.NewSigner(secret)
	if err != nil {
		return err
	}
	s.TTL = *ttl
	u, err := s.SignURL(*endpoint, *user)
	if err != nil {
		return err
	}
	fmt.Println(u)
	fmt.Fprintf(os.Stderr, "sign: valid until %s\n", time.Now().Add(*ttl).Format(time.RFC3339))
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
