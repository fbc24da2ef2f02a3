package dynamodblocal

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"
)

// ChecksumProxy stands in front of DynamoDB Local and adds the X-Amz-Crc32 header the
// emulator leaves out of its 4xx responses (see ClientOptions for the symptom), so that
// unmodified clients — the product's Lambdas and agents in the local stack — see the
// wire behaviour of DynamoDB itself. ClientOptions fixes the same gap on the client side
// for the emulator's own tests; the proxy fixes it at the emulator, where it belongs.
type ChecksumProxy struct {
	srv *http.Server
	ln  net.Listener
}

// NewChecksumProxy serves a proxy to target (the emulator's endpoint) on 127.0.0.1.
func NewChecksumProxy(target string) (*ChecksumProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("checksum proxy: %w", err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = addChecksum
	// A client that goes away mid-request (a killed task) is not the proxy's error.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("checksum proxy: %w", err)
	}
	p := &ChecksumProxy{srv: &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go p.srv.Serve(ln)
	return p, nil
}

// Endpoint is the proxy's URL, for AWS_ENDPOINT_URL_DYNAMODB.
func (p *ChecksumProxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy.
func (p *ChecksumProxy) Close() error {
	if err := p.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func addChecksum(resp *http.Response) error {
	if resp.Header.Get(crc32Header) != "" {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("checksum proxy: read body: %w", err)
	}
	// A gzip-encoded body would need the CRC of the encoded bytes, which is what is
	// hashed here too: the proxy never decodes.
	resp.Header.Set(crc32Header, strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}
