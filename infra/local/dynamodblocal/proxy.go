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

const crc32Header = "X-Amz-Crc32"

// checksumProxy stands in front of DynamoDB Local and adds the X-Amz-Crc32 header the
// emulator leaves out of its 4xx responses.
//
// Why: DynamoDB sends the CRC32 of the body on every response, errors included, and
// the SDK's response checksum middleware counts on it: when the header is missing it
// compares the body's CRC32 with 0. DynamoDB Local 3.3.0 sends the header on 200s
// only, so each ConditionalCheckFailed or TransactionCanceled (the normal outcome of a
// lost race) made every stock client log "response did not match expected checksum".
// The bodies are intact. Fixing the emulator's answers, not the clients, keeps every
// client in the tests and the local stack the stock one, and their validation on.
type checksumProxy struct {
	srv *http.Server
	ln  net.Listener
}

// newChecksumProxy serves a proxy to target on 127.0.0.1:port (0 picks a free port),
// with g checking every request before it is passed on (nil: none is checked).
func newChecksumProxy(port int, target string, g *gate) (*checksumProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("checksum proxy: %w", err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = addChecksum
	// A client that goes away mid-request (a killed task) is not the proxy's error.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("checksum proxy: %w", err)
	}
	p := &checksumProxy{srv: &http.Server{Handler: g.wrap(rp), ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *checksumProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Close stops the proxy and its connections, so clients see the outage at once.
func (p *checksumProxy) Close() error {
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
	// The CRC covers the bytes as sent; the proxy never decodes a gzip body.
	resp.Header.Set(crc32Header, strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}
