package vend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/funcurl"
)

// Errors of Client.Credentials. Any other error is transient: ask again later.
var (
	// ErrRefused: the vendor will not hand this task the user's credentials (it is
	// not the task the record names, or not with the current lease). Asking again
	// will not help.
	ErrRefused = errors.New("credentials refused")
	// ErrNotRecorded: the lease is current but the record names no task yet; ask
	// again shortly.
	ErrNotRecorded = errors.New("credentials deferred: the task is not recorded yet")
)

// Client asks the vendor for credentials, signing with the task role's credentials.
type Client struct {
	fu *funcurl.Client
}

// NewClient returns a Client of the vendor's function URL rawURL; creds are the task
// role's (the container credentials), the only thing they are used for.
func NewClient(rawURL string, creds aws.CredentialsProvider, region string, hc *http.Client) (*Client, error) {
	fu, err := funcurl.NewClient(rawURL, creds, region, hc)
	if err != nil {
		return nil, err
	}
	return &Client{fu: fu}, nil
}

// Credentials asks for r's credentials.
func (c *Client) Credentials(ctx context.Context, r Request) (Credentials, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return Credentials{}, err
	}
	resp, err := c.fu.Post(ctx, PathCredentials, body)
	if err != nil {
		return Credentials{}, fmt.Errorf("ask the credential vendor: %w", err)
	}
	if resp.Status == http.StatusOK {
		var creds Credentials
		if err := json.Unmarshal(resp.Body, &creds); err != nil {
			return Credentials{}, fmt.Errorf("credential vendor's answer: %w", err)
		}
		if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.Expiration.IsZero() {
			return Credentials{}, errors.New("credential vendor's answer: incomplete credentials")
		}
		return creds, nil
	}
	var ref Refusal
	_ = json.Unmarshal(resp.Body, &ref)
	switch {
	case resp.Status == http.StatusConflict && ref.Error == CodeNotRecorded:
		return Credentials{}, ErrNotRecorded
	case resp.Status == http.StatusForbidden && ref.Error == CodeRefused:
		return Credentials{}, ErrRefused
	}
	// Lambda's own answers (a 403 for a call IAM denied, 429 or 5xx) and the vendor's
	// 503 alike: nothing the vendor decided about this task.
	return Credentials{}, fmt.Errorf("credential vendor answered %d %s", resp.Status, firstLine(resp.Body))
}

// firstLine returns the start of an answer's body, for an error message.
func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
