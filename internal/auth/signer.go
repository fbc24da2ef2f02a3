package auth

import "github.com/sandgate/sandgate/sdk/go/sign"

// The signer is the public one in sdk/go/sign, so a Go backend signs with exactly what
// the verifier below checks; these names keep the service's own callers on one package.
type (
	// Signed is one signed identity: the three query parameters of a connection URL.
	Signed = sign.Signed
	// Signer makes signed connection URLs.
	Signer = sign.Signer
)

// NewSigner returns a Signer for secret, which must be at least MinSecretBytes long.
func NewSigner(secret string) (*Signer, error) { return sign.NewSigner(secret) }
