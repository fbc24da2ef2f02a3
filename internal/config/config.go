package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Lookup reads one variable; os.LookupEnv in production, a map in tests.
type Lookup func(name string) (string, bool)

// Map returns a Lookup over m.
func Map(m map[string]string) Lookup {
	return func(name string) (string, bool) { v, ok := m[name]; return v, ok }
}

// Env reads typed variables and collects every error, so a misconfigured function
// reports all its mistakes in one start-up failure instead of one per deploy.
type Env struct {
	lookup Lookup
	read   []string
	errs   []error
}

// New returns an Env over lookup.
func New(lookup Lookup) *Env { return &Env{lookup: lookup} }

func (e *Env) get(name string) (string, bool) {
	e.read = append(e.read, name)
	v, ok := e.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (e *Env) fail(name, format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// String returns the variable, or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v, ok := e.get(name); ok {
		return v
	}
	return def
}

// Required returns the variable and records an error when it is unset or empty.
func (e *Env) Required(name string) string {
	v, ok := e.get(name)
	if !ok {
		e.fail(name, "required but not set")
	}
	return v
}

// Int returns the variable as an integer in [min, max], or def when unset.
func (e *Env) Int(name string, def, min, max int) int {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		e.fail(name, "want an integer in [%d, %d], got %q", min, max, v)
		return def
	}
	return n
}

// Duration returns the variable as a duration, or def when unset. It accepts Go
// durations ("90s", "10m") and plain seconds ("600"), the form CloudFormation
// parameters usually carry. Zero and negative durations are errors.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, serr := strconv.ParseInt(v, 10, 64)
		if serr != nil {
			e.fail(name, "want a duration such as 90s or 10m, or seconds, got %q", v)
			return def
		}
		d = time.Duration(secs) * time.Second
	}
	if d <= 0 {
		e.fail(name, "want a positive duration, got %q", v)
		return def
	}
	return d
}

// Bool returns the variable as a boolean, or def when unset.
func (e *Env) Bool(name string, def bool) bool {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, "want true or false, got %q", v)
		return def
	}
	return b
}

// List returns the comma-separated variable with empty entries dropped, or nil.
func (e *Env) List(name string) []string {
	v, ok := e.get(name)
	if !ok {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Level returns the variable as a slog level (DEBUG, INFO, WARN, ERROR), or def.
func (e *Env) Level(name string, def slog.Level) slog.Level {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		e.fail(name, "want DEBUG, INFO, WARN or ERROR, got %q", v)
		return def
	}
	return l
}

// Check records err against name when it is not nil; for validation done by callers.
func (e *Env) Check(name string, err error) {
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
	}
}

// Names returns every variable read so far, in order, without repeats.
func (e *Env) Names() []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range e.read {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// Err returns every problem found, joined, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %w", errors.Join(e.errs...))
}
