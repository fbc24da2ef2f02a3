package ecslocal

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/sandgate/sandgate/infra/local/proc"
	"github.com/sandgate/sandgate/internal/logging"
)

// sandbox is what isolates one running task (see isolation.go): its network namespace
// and what is forwarded into and out of it, its cgroups, the capabilities its process
// starts with.
type sandbox struct {
	ns       *netns
	cg       *taskCgroup
	keep     []string // the bounding set
	meta     *http.Server
	forwards []*forwarder
	log      *slog.Logger
}

// loopbackURL finds the loopback endpoints a task's environment names.
var loopbackURL = regexp.MustCompile(`(?i)\bhttps?://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost):([0-9]{1,5})`)

// egress lists the loopback endpoints env names (the emulators, a test's proxies), but
// for task addresses, which belong to other tasks, and the metadata server's own.
func (s *Server) egress(env []string) []netip.AddrPort {
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	meta, _ := netip.ParseAddrPort(s.metaLn.Addr().String())
	for _, kv := range env {
		_, v, _ := strings.Cut(kv, "=")
		for _, m := range loopbackURL.FindAllStringSubmatch(v, -1) {
			host := m[1]
			if strings.EqualFold(host, "localhost") {
				host = "127.0.0.1"
			}
			a, err := netip.ParseAddr(host)
			if err != nil {
				continue
			}
			var port uint16
			if _, err := fmt.Sscan(m[2], &port); err != nil || port == 0 {
				continue
			}
			ap := netip.AddrPortFrom(a, port)
			if seen[ap] || s.pool.prefix.Contains(a) || ap == meta {
				continue
			}
			seen[ap] = true
			out = append(out, ap)
		}
	}
	return out
}

// isolate builds t's sandbox before its process starts, on the task's lifecycle
// goroutine; env is the process's environment. On error nothing of it is left.
func (s *Server) isolate(t *task, env []string) (_ *sandbox, err error) {
	sb := &sandbox{log: s.log.With(logging.TaskARN, t.arn), keep: boundingSet(t.def.addCaps, t.def.dropCaps)}
	defer func() {
		if err != nil {
			sb.close()
		}
	}()
	if sb.ns, err = newNetns(); err != nil {
		return nil, err
	}
	// The metadata and credentials endpoints, for this task alone.
	ln, err := sb.ns.listen(MetadataAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in the task's network: %w", MetadataAddress, err)
	}
	sb.meta = &http.Server{Handler: s.metadataHandler(t), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go func() { _ = sb.meta.Serve(ln) }()
	// Out: the endpoints the task's configuration names, from the task's own address.
	dialer := &net.Dialer{Timeout: forwardDialTimeout, LocalAddr: &net.TCPAddr{IP: t.ip.AsSlice()}}
	for _, ap := range s.egress(env) {
		ln, err := sb.ns.listen(ap)
		if err != nil {
			return nil, fmt.Errorf("forward %s into the task's network: %w", ap, err)
		}
		sb.forwards = append(sb.forwards, forward(ln, func() (net.Conn, error) { return dialer.Dial("tcp4", ap.String()) }, sb.log))
	}
	// In: the port mapping, at the task's address, as the functions reach an awsvpc task.
	if t.def.port != 0 {
		ap := netip.AddrPortFrom(t.ip, uint16(t.def.port))
		ln, err := net.Listen("tcp4", ap.String())
		if err != nil {
			return nil, fmt.Errorf("forward the task's port %d: %w", t.def.port, err)
		}
		sb.forwards = append(sb.forwards, forward(ln, func() (net.Conn, error) { return sb.ns.dial(ap, forwardDialTimeout) }, sb.log))
	}
	if s.iso.cgroups != nil {
		memory := t.def.memory
		if n, err := parsePositive(t.memory); err == nil {
			memory = n
		}
		if sb.cg, err = s.iso.cgroups.newTaskCgroup(t.id, memory, DefaultTaskPids); err != nil {
			return nil, err
		}
	}
	return sb, nil
}

func parsePositive(s string) (int, error) {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
		return 0, errors.New("not a positive number")
	}
	return n, nil
}

// start starts cmd as the task's process: PID 1 of a PID namespace of its own, inside
// the task's network namespace and cgroups, with the task's bounding set. A spawner
// forks it (spawner.go).
func (sb *sandbox) start(cmd *exec.Cmd) (*proc.Process, error) {
	return spawnerFor(sb.keep).spawn(sb, cmd)
}

// close tears the sandbox down: the listeners and forwarded connections, the
// namespace's descriptor (the namespace goes with the task's last process), the
// cgroups (empty once the task's PID namespace is). Call it after the process exited.
func (sb *sandbox) close() error {
	var errs []error
	if sb.meta != nil {
		errs = append(errs, sb.meta.Close())
	}
	for _, f := range sb.forwards {
		if err := f.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if sb.ns != nil {
		errs = append(errs, sb.ns.close())
	}
	if sb.cg != nil {
		errs = append(errs, sb.cg.remove())
	}
	return errors.Join(errs...)
}

// netnsID names the sandbox's network namespace ("" without one).
func (sb *sandbox) netnsID() string {
	if sb == nil || sb.ns == nil {
		return ""
	}
	return sb.ns.id()
}
