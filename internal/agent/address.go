package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
)

// Defaults of the address lookup and the health check.
const (
	// DefaultAddressAttempts and DefaultAddressBackoff: the metadata endpoint can
	// answer before the task's network is attached, so ask a few times (about 6 s).
	DefaultAddressAttempts = 10
	DefaultAddressBackoff  = 100 * time.Millisecond
	// DefaultHealthTimeout bounds the health check's request, well under the task
	// definition's HealthCheck Timeout of 5 s.
	DefaultHealthTimeout = 3 * time.Second
)

// ErrNoAddress: the metadata endpoint did not give the container an IPv4 address.
var ErrNoAddress = errors.New("no IPv4 address in the container metadata")

// containerMetadata is the part of the task metadata v4 container response used here.
type containerMetadata struct {
	Networks []struct {
		IPv4Addresses []string `json:"IPv4Addresses"`
	} `json:"Networks"`
}

// Address returns the task's own IPv4 address: GET metadataURI (the container
// metadata of ECS_CONTAINER_METADATA_URI_V4) → Networks[0].IPv4Addresses[0], asked up
// to attempts times with a growing delay. On Fargate it is the task's ENI address,
// which the Lambdas reach; locally, each task's own 127.x address.
func Address(ctx context.Context, hc *http.Client, metadataURI string, attempts int) (netip.Addr, error) {
	if attempts <= 0 {
		attempts = DefaultAddressAttempts
	}
	delay := DefaultAddressBackoff
	var last error
	for i := range attempts {
		addr, err := address(ctx, hc, metadataURI)
		if err == nil {
			return addr, nil
		}
		last = err
		if i == attempts-1 {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return netip.Addr{}, fmt.Errorf("find task address: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
	return netip.Addr{}, fmt.Errorf("find task address after %d attempts: %w", attempts, last)
}

func address(ctx context.Context, hc *http.Client, uri string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return netip.Addr{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return netip.Addr{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return netip.Addr{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return netip.Addr{}, fmt.Errorf("metadata endpoint answered %d", resp.StatusCode)
	}
	var m containerMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		return netip.Addr{}, fmt.Errorf("decode container metadata: %w", err)
	}
	if len(m.Networks) == 0 || len(m.Networks[0].IPv4Addresses) == 0 {
		return netip.Addr{}, ErrNoAddress
	}
	addr, err := netip.ParseAddr(m.Networks[0].IPv4Addresses[0])
	if err != nil || !addr.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %q", ErrNoAddress, m.Networks[0].IPv4Addresses[0])
	}
	return addr, nil
}

// Endpoint is the URL the Lambdas reach the agent at.
func Endpoint(addr netip.Addr, port int) string {
	return "http://" + net.JoinHostPort(addr.String(), strconv.Itoa(port))
}

// Healthcheck finds the agent the way the agent finds itself and asks its health
// endpoint; nil means healthy. It is the container's HEALTHCHECK.
func Healthcheck(ctx context.Context, hc *http.Client, cfg HealthConfig) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultHealthTimeout)
	defer cancel()
	addr, err := Address(ctx, hc, cfg.MetadataURI, 2)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, Endpoint(addr, cfg.Port)+agentapi.HealthPath, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check: agent answered %d", resp.StatusCode)
	}
	return nil
}
