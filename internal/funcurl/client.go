package funcurl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SigningName is the service function URL requests are signed for.
const SigningName = "lambda"

// DefaultTimeout bounds one request, answer included.
const DefaultTimeout = 10 * time.Second

// MaxResponseBytes bounds the answer read: a function URL's response is at most 6 MB.
const MaxResponseBytes = 6 << 20

// Client calls one function URL with SigV4-signed requests. It is safe for concurrent
// use.
type Client struct {
	// URL is the function URL (https://<id>.lambda-url.<region>.on.aws/).
	URL *url.URL
	// Credentials sign every request.
	Credentials aws.CredentialsProvider
	// Region is the function's region, part of the signature.
	Region string
	// HTTP sends the requests (an *http.Client with DefaultTimeout when nil).
	HTTP *http.Client
	// Now is the signing clock (time.Now).
	Now func() time.Time

	signer *v4.Signer
}

// NewClient returns a Client of the function URL rawURL.
func NewClient(rawURL string, creds aws.CredentialsProvider, region string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("function url %q: %w", rawURL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("function url %q: not an http(s) URL", rawURL)
	}
	if creds == nil || region == "" {
		return nil, errors.New("function url client: credentials and region are required")
	}
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Requests in flight at once (the relay's batches) each keep their connection.
		t.MaxIdleConnsPerHost = 16
		hc = &http.Client{Timeout: DefaultTimeout, Transport: t}
	}
	return &Client{URL: u, Credentials: creds, Region: region, HTTP: hc, Now: time.Now, signer: v4.NewSigner()}, nil
}

// Response is a function URL's answer.
type Response struct {
	Status int
	Body   []byte
}

// Post sends body (JSON) to path under the URL, signed, and returns the answer
// whatever its status; err is about the exchange itself (credentials, network).
func (c *Client) Post(ctx context.Context, path string, body []byte) (Response, error) {
	u := *c.URL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(path, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	creds, err := c.Credentials.Retrieve(ctx)
	if err != nil {
		return Response{}, fmt.Errorf("sign request to %s: %w", u.Host, err)
	}
	sum := sha256.Sum256(body)
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	signer := c.signer
	if signer == nil {
		signer = v4.NewSigner()
	}
	if err := signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), SigningName, c.Region, now()); err != nil {
		return Response{}, fmt.Errorf("sign request to %s: %w", u.Host, err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return Response{}, fmt.Errorf("read answer of %s: %w", u.Host, err)
	}
	return Response{Status: resp.StatusCode, Body: b}, nil
}
