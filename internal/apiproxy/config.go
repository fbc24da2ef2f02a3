package apiproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/config"
)

// The variables that declare upstreams. UPSTREAMS lists the names; each name's
// settings are UPSTREAM_<NAME>_*, NAME upper-cased. The key comes from the task
// definition's Secrets (Secrets Manager, read by ECS with the execution role), so it
// is in the agent's environment only: the workload's is an allowlist that refuses it.
const (
	EnvUpstreams = "UPSTREAMS"
	// Per upstream: the suffixes of UPSTREAM_<NAME>_.
	SuffixURL         = "URL"
	SuffixKey         = "KEY"
	SuffixHeader      = "HEADER"
	SuffixRate        = "RATE"
	SuffixSpend       = "SPEND"
	SuffixSpendWindow = "SPEND_WINDOW"
)

// Defaults of an upstream's settings.
const (
	DefaultHeader      = "Authorization"
	DefaultSpendWindow = 24 * time.Hour
	// MaxUpstreams bounds UPSTREAMS: each is a listener and a variable family.
	MaxUpstreams = 8
)

// Upstream is one API the team declared.
type Upstream struct {
	// Name is the upstream's name in UPSTREAMS: lower-case letters and digits.
	Name string
	// URL is where calls go: https, or http to a loopback address (a stub on the same
	// host). Its path is the base every call's path is appended to.
	URL *url.URL
	// Header carries the credential: "Authorization" gets "Bearer <key>", any other
	// header the key itself. Whatever the workload put there is replaced.
	Header string
	// Key is the credential. It is never logged, and scrubbed from every answer.
	Key string
	// RatePerMinute bounds the user's calls (0: no bound); bursts up to one minute's.
	RatePerMinute int
	// Spend bounds the tokens the upstream reports in its answers' usage per
	// SpendWindow (0: no bound).
	Spend       int64
	SpendWindow time.Duration
}

// Var is the variable of upstream name's setting suffix: UPSTREAM_<NAME>_<suffix>.
func Var(name, suffix string) string {
	return "UPSTREAM_" + strings.ToUpper(name) + "_" + suffix
}

// WorkloadVar is the variable that tells the workload where upstream name's proxy
// listens: SANDGATE_UPSTREAM_<NAME>_URL.
func WorkloadVar(name string) string { return "SANDGATE_UPSTREAM_" + strings.ToUpper(name) + "_URL" }

// IsKeyVar reports whether name is an upstream's key variable (UPSTREAM_*_KEY), which
// no workload may be given, whichever upstreams are declared.
func IsKeyVar(name string) bool {
	return strings.HasPrefix(name, "UPSTREAM_") && strings.HasSuffix(name, "_"+SuffixKey) && len(name) > len("UPSTREAM__KEY")
}

var upstreamName = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// LoadUpstreams reads the declared upstreams from env; problems are collected in env
// (env.Err), none of them quoting a key.
func LoadUpstreams(env *config.Env) []Upstream {
	names := env.List(EnvUpstreams)
	if len(names) > MaxUpstreams {
		env.Check(EnvUpstreams, fmt.Errorf("%d upstreams, at most %d", len(names), MaxUpstreams))
		return nil
	}
	var out []Upstream
	seen := map[string]bool{}
	for _, name := range names {
		if !upstreamName.MatchString(name) {
			env.Check(EnvUpstreams, fmt.Errorf("%q is not an upstream name (lower-case letters and digits, at most 16, a letter first)", name))
			continue
		}
		if seen[name] {
			env.Check(EnvUpstreams, fmt.Errorf("%q is listed twice", name))
			continue
		}
		seen[name] = true
		u := Upstream{Name: name}
		raw := env.Required(Var(name, SuffixURL))
		if raw != "" {
			var err error
			u.URL, err = checkUpstreamURL(raw)
			env.Check(Var(name, SuffixURL), err)
		}
		u.Key = env.Required(Var(name, SuffixKey))
		if strings.ContainsAny(u.Key, "\r\n") {
			env.Check(Var(name, SuffixKey), errors.New("holds a line break, which no header may carry"))
		}
		u.Header = http.CanonicalHeaderKey(env.String(Var(name, SuffixHeader), DefaultHeader))
		if !headerName.MatchString(u.Header) || hopHeaders[u.Header] {
			env.Check(Var(name, SuffixHeader), fmt.Errorf("%q is not a header the proxy may set", u.Header))
		}
		u.RatePerMinute = env.Int(Var(name, SuffixRate), 0, 0, 1_000_000)
		u.Spend = int64(env.Int(Var(name, SuffixSpend), 0, 0, 1<<52))
		u.SpendWindow = env.Duration(Var(name, SuffixSpendWindow), DefaultSpendWindow)
		if u.SpendWindow < time.Minute {
			env.Check(Var(name, SuffixSpendWindow), fmt.Errorf("%s is under a minute", u.SpendWindow))
		}
		out = append(out, u)
	}
	return out
}

var headerName = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// hopHeaders are headers a proxy consumes or rewrites itself: never the credential's.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Content-Length": true, "Accept-Encoding": true,
}

// checkUpstreamURL accepts https, and http only to a loopback address: the key never
// crosses a network in the clear.
func checkUpstreamURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: want scheme://host[:port][/base path], no user, query or fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		ip := net.ParseIP(u.Hostname())
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%q: http only to a loopback address; the key crosses a network over https only", raw)
		}
	default:
		return nil, fmt.Errorf("%q: want https", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Format prints the upstream without its key, whatever the verb: a configuration
// printed for debugging must not carry the secret.
func (u Upstream) Format(f fmt.State, verb rune) {
	base := ""
	if u.URL != nil {
		base = u.URL.String()
	}
	fmt.Fprintf(f, "{%s %s %s key:%s rate:%d/min spend:%d/%s}", u.Name, base, u.Header, Redacted, u.RatePerMinute, u.Spend, u.SpendWindow)
}

// LogValue logs the upstream without its key.
func (u Upstream) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(u)) }
