package secretcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/internal/logging"
)

// Defaults of a Cache.
const (
	// DefaultRefresh is how long a value read is used before it is read again: a
	// rotation reaches a warm function within this time.
	DefaultRefresh = 5 * time.Minute
	// DefaultMaxStale bounds how long a value is still used while every reread fails
	// (Secrets Manager unreachable, a rotation to a value that does not parse): past
	// it, the function fails closed rather than trust a secret it cannot confirm.
	DefaultMaxStale = time.Hour
	// DefaultRetryAfter is the wait after a failed reread before the next one, so a
	// failing Secrets Manager is not asked on every invocation.
	DefaultRetryAfter = 10 * time.Second
	// DefaultReadTimeout bounds one read.
	DefaultReadTimeout = 3 * time.Second
)

// ErrUnavailable: no usable value — the secret could not be read (or did not parse)
// and no value read earlier is fresh enough to use.
var ErrUnavailable = errors.New("secret unavailable")

// API is the part of the Secrets Manager client a Cache uses.
type API interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

var _ API = (*secretsmanager.Client)(nil)

// Cache holds the parsed current value (AWSCURRENT) of one secret. Set the fields
// before the first Get; a Cache is then safe for concurrent use. A value is parsed once
// per version; errors it returns never contain the secret.
type Cache[T any] struct {
	API API
	// SecretID is the secret's name or ARN (not a secret).
	SecretID string
	// Parse turns the SecretString into the value used; an error makes the read a
	// failed one (the previous value stays in use, within MaxStale). It must not put
	// the secret into its error.
	Parse func(string) (T, error)
	// Refresh, MaxStale, RetryAfter and ReadTimeout are the Default* constants when zero.
	Refresh, MaxStale, RetryAfter, ReadTimeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Log receives a warning for each failed reread (nil: none). Never the value.
	Log *slog.Logger

	mu      sync.Mutex
	val     T
	version string
	has     bool
	readAt  time.Time // the last read that confirmed val
	nextTry time.Time // after a failed read, no other before this
	lastErr error
}

func (c *Cache[T]) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Get returns the secret's value: the one held while it is younger than Refresh, else
// the current version read again. When that read fails, the value held is returned
// while it is younger than MaxStale (and the read is tried again after RetryAfter);
// without one, Get returns ErrUnavailable.
func (c *Cache[T]) Get(ctx context.Context) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	age := now.Sub(c.readAt)
	if c.has && age < or(c.Refresh, DefaultRefresh) {
		return c.val, nil
	}
	if now.Before(c.nextTry) {
		return c.stale(age)
	}
	if err := c.readLocked(ctx); err != nil {
		c.lastErr, c.nextTry = err, now.Add(or(c.RetryAfter, DefaultRetryAfter))
		if c.Log != nil {
			c.Log.WarnContext(ctx, "secret not read again", logSecret, c.SecretID, logging.Error, err.Error())
		}
		return c.stale(age)
	}
	c.readAt, c.lastErr, c.nextTry = now, nil, time.Time{}
	return c.val, nil
}

// logSecret names the secret (its id, never its value) in log lines.
const logSecret = "secretId"

// stale returns the value held if it may still be used after a failed read.
func (c *Cache[T]) stale(age time.Duration) (T, error) {
	if c.has && age < or(c.MaxStale, DefaultMaxStale) {
		return c.val, nil
	}
	var zero T
	return zero, fmt.Errorf("%w: %s: %w", ErrUnavailable, c.SecretID, c.lastErr)
}

// readLocked reads the current version; a version already parsed is not parsed again.
func (c *Cache[T]) readLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, or(c.ReadTimeout, DefaultReadTimeout))
	defer cancel()
	out, err := c.API.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(c.SecretID)})
	if err != nil {
		return fmt.Errorf("read secret %s: %w", c.SecretID, err)
	}
	version := aws.ToString(out.VersionId)
	if c.has && version != "" && version == c.version {
		return nil
	}
	if out.SecretString == nil {
		return fmt.Errorf("read secret %s: no SecretString (a binary secret?)", c.SecretID)
	}
	v, err := c.Parse(*out.SecretString)
	if err != nil {
		return fmt.Errorf("secret %s (version %s): %w", c.SecretID, version, err)
	}
	c.val, c.version, c.has = v, version, true
	return nil
}

// Version returns the version id of the value held ("" before the first read).
func (c *Cache[T]) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// EnvRefresh is the variable that sets a function's Refresh (a Go duration or seconds).
const EnvRefresh = "SECRETS_REFRESH"
