package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/vend"
)

// Defaults of Credentials.
const (
	// DefaultRecordWait is how long the first request for credentials is retried while
	// the vendor answers that the task is not recorded yet (the launcher records it
	// right after RunTask) or cannot be reached.
	DefaultRecordWait = 2 * time.Minute
	// DefaultCredentialsMargin is how long before they expire the credentials are
	// given up if they could not be renewed (at most a sixth of their life).
	DefaultCredentialsMargin = 5 * time.Minute
	// renewAt is the fraction of their life after which credentials are renewed.
	renewAt = 2.0 / 3
)

// ErrCredentialsLost: the credentials could not be renewed before they expired, or the
// vendor refused to renew them; the agent fences itself as on a lost lease.
var ErrCredentialsLost = errors.New("credentials lost")

// Vendor is the credential vendor as the agent calls it (*vend.Client).
type Vendor interface {
	Credentials(ctx context.Context, r vend.Request) (vend.Credentials, error)
}

var _ Vendor = (*vend.Client)(nil)

// Clock is the time Credentials keep and wait with: the system's unless a test sets
// one (testkit.Clock).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Credentials are the sandbox's credentials, scoped to its user: asked of the vendor
// with the task role, kept, renewed at two thirds of their life, and given up (Lost)
// when they cannot be renewed before they expire less a margin. Every AWS client of
// the agent signs with them (they are an aws.CredentialsProvider); the task role signs
// nothing but the requests to the vendor. Set the tunables before Fetch.
type Credentials struct {
	// RecordWait is DefaultRecordWait when zero.
	RecordWait time.Duration
	// Margin is DefaultCredentialsMargin when zero.
	Margin time.Duration
	// Clock is the system's when nil.
	Clock Clock

	vendor Vendor
	req    vend.Request
	log    *slog.Logger

	mu      sync.Mutex
	cur     vend.Credentials
	renew   time.Time // when to renew cur
	fence   time.Time // when cur is given up
	fetched bool

	lostOnce sync.Once
	lost     chan struct{}
	lostErr  error
}

var _ aws.CredentialsProvider = (*Credentials)(nil)

// NewCredentials returns the credentials of the sandbox r describes, not yet fetched.
func NewCredentials(v Vendor, r vend.Request, log *slog.Logger) *Credentials {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Credentials{vendor: v, req: r, log: log, lost: make(chan struct{})}
}

func (c *Credentials) clock() Clock {
	if c.Clock == nil {
		return systemClock{}
	}
	return c.Clock
}

// Fetch gets the first credentials. While the vendor answers that the task is not
// recorded yet, or cannot be reached, it asks again with backoff for RecordWait. A
// refusal (vend.ErrRefused: this task does not hold the user's current lease) is
// returned at once.
func (c *Credentials) Fetch(ctx context.Context) error {
	clk := c.clock()
	deadline := clk.Now().Add(orDefault(c.RecordWait, DefaultRecordWait))
	delay := 200 * time.Millisecond
	for {
		err := c.ask(ctx)
		if err == nil || errors.Is(err, vend.ErrRefused) {
			return err
		}
		if !clk.Now().Add(delay).Before(deadline) {
			return fmt.Errorf("no credentials within %s: %w", orDefault(c.RecordWait, DefaultRecordWait), err)
		}
		if errors.Is(err, vend.ErrNotRecorded) {
			c.log.Info("credentials not yet: the task is not recorded; asking again")
		} else {
			c.log.Warn("credentials unavailable; asking again", logging.Error, err.Error())
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-clk.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// ask asks the vendor once and keeps what it answers.
func (c *Credentials) ask(ctx context.Context) error {
	asked := c.clock().Now()
	got, err := c.vendor.Credentials(ctx, c.req)
	if err != nil {
		return err
	}
	life := got.Expiration.Sub(asked)
	if life <= 0 {
		return fmt.Errorf("credentials expired on arrival (%s)", got.Expiration.Format(time.RFC3339))
	}
	margin := min(orDefault(c.Margin, DefaultCredentialsMargin), life/6)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = got
	c.renew = asked.Add(time.Duration(float64(life) * renewAt))
	c.fence = got.Expiration.Add(-margin)
	c.fetched = true
	return nil
}

// Run renews the credentials until ctx ends or they are lost: at two thirds of their
// life, and again with backoff after a failure, until they would be given up. A
// refusal loses them at once: the user's record no longer names this task with this
// lease, so another sandbox may own the user's data.
func (c *Credentials) Run(ctx context.Context) {
	clk := c.clock()
	delay := time.Second
	for {
		c.mu.Lock()
		renew, fence := c.renew, c.fence
		c.mu.Unlock()
		now := clk.Now()
		if !now.Before(fence) {
			c.lose(fmt.Errorf("not renewed before %s", fence.UTC().Format(time.RFC3339)))
			return
		}
		if now.Before(renew) {
			select {
			case <-ctx.Done():
				return
			case <-clk.After(min(renew.Sub(now), fence.Sub(now))):
			}
			continue
		}
		// A renewal answered after the fence would be worth nothing.
		callCtx, cancel := context.WithTimeout(ctx, fence.Sub(now))
		err := c.ask(callCtx)
		cancel()
		switch {
		case err == nil:
			delay = time.Second
			c.log.Debug("credentials renewed")
			continue
		case errors.Is(err, vend.ErrRefused):
			c.lose(err)
			return
		case ctx.Err() != nil:
			return
		}
		c.log.Warn("credentials renewal failed; retrying", logging.Error, err.Error())
		wait := min(delay, fence.Sub(clk.Now()))
		delay = min(2*delay, 30*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-clk.After(max(wait, 0)):
		}
	}
}

// lose gives the credentials up: from now on Retrieve fails and Lost is closed.
func (c *Credentials) lose(cause error) {
	c.lostOnce.Do(func() {
		c.lostErr = fmt.Errorf("%w: %w", ErrCredentialsLost, cause)
		c.log.Error("credentials lost; the sandbox stops writing", logging.Error, cause.Error())
		close(c.lost)
	})
}

// Lost is closed once the credentials are given up.
func (c *Credentials) Lost() <-chan struct{} { return c.lost }

// Err says why the credentials were lost (it matches ErrCredentialsLost); valid after
// Lost.
func (c *Credentials) Err() error { <-c.lost; return c.lostErr }

// Retrieve returns the current credentials, expiring (for the SDK's cache) when they
// are given up, by which time renewed ones have replaced them.
func (c *Credentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	return c.retrieve(func(v vend.Credentials) (string, string, string, bool) {
		return v.AccessKeyID, v.SecretAccessKey, v.SessionToken, true
	})
}

// Storage returns the provider of the bucket's credentials: the storage credentials
// the vendor hands out with the session when the bucket is not AWS S3 (R2), else the
// session's own (these Credentials).
func (c *Credentials) Storage() aws.CredentialsProvider { return storageCredentials{c} }

type storageCredentials struct{ c *Credentials }

func (s storageCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	return s.c.retrieve(func(v vend.Credentials) (string, string, string, bool) {
		if v.Storage == nil {
			return v.AccessKeyID, v.SecretAccessKey, v.SessionToken, true
		}
		return v.Storage.AccessKeyID, v.Storage.SecretAccessKey, v.Storage.SessionToken, true
	})
}

func (c *Credentials) retrieve(pick func(vend.Credentials) (id, secret, token string, ok bool)) (aws.Credentials, error) {
	select {
	case <-c.lost:
		return aws.Credentials{}, c.lostErr
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fetched {
		return aws.Credentials{}, errors.New("credentials not fetched yet")
	}
	if !c.clock().Now().Before(c.fence) {
		return aws.Credentials{}, fmt.Errorf("%w: past %s", ErrCredentialsLost, c.fence.UTC().Format(time.RFC3339))
	}
	id, secret, token, _ := pick(c.cur)
	return aws.Credentials{
		AccessKeyID: id, SecretAccessKey: secret, SessionToken: token,
		Source: "sandgate-vend", CanExpire: true, Expires: c.fence,
	}, nil
}
