package stack

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// The stack's files are this machine's, which every task's workload shares (Fargate
// gives each task a file system of its own). With tasks isolated (ecslocal.Server.Isolate),
// each workload runs under a uid of its own: what it may read is what the file modes
// let any uid read. So the stack's root is traversable but not listable (each workload
// must pass through to its task's directory) and everything in it but the tasks' root
// is root's alone: the persisted DynamoDB and S3 data (every user's items and objects,
// leases and gateway tokens among them) and aws.env (the operator's key).

// tasksDir is the tasks' root under the stack's root.
const tasksDir = "tasks"

// lockDownRoot makes the stack's root 0711 and takes every other uid's access away from
// what it holds but the tasks' root, which ecslocal keeps to itself.
func lockDownRoot(root string) error {
	if err := os.Chmod(root, 0o711); err != nil {
		return fmt.Errorf("stack root: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("stack root: %w", err)
	}
	for _, e := range entries {
		if e.Name() == tasksDir || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		p := filepath.Join(root, e.Name())
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("stack root: %w", err)
		}
		if err := os.Chmod(p, fi.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("stack root: %w", err)
		}
	}
	return nil
}

// notFromTasks refuses what a task sends to h: the demo page's dev-only endpoints sign
// URLs for any user and restart and list any user's sandbox, so they answer this
// machine's own processes only. An isolated task's connections to the gateway come from
// the task's address (ecslocal forwards them from it).
func notFromTasks(tasks netip.Prefix, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		a, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || tasks.Contains(a.Unmap()) {
			http.Error(w, "the local stack's dev-only endpoints do not answer tasks", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// devOnlyMux registers the demo page's handlers on the gateway, its /dev/ endpoints
// refusing tasks.
type devOnlyMux struct {
	gateway interface {
		Handle(pattern string, handler http.Handler)
	}
	tasks netip.Prefix
}

func (m devOnlyMux) Handle(pattern string, h http.Handler) {
	_, path, _ := strings.Cut(pattern, " ")
	if strings.HasPrefix(path, "/dev/") || strings.HasPrefix(pattern, "/dev/") {
		h = notFromTasks(m.tasks, h)
	}
	m.gateway.Handle(pattern, h)
}
