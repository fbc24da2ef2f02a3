package ecslocal

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A task's network namespace, as awsvpc gives a Fargate task an interface of its own.
// It has nothing but its loopback interface: 127.0.0.0/8 (the task's own address, the
// workload's port, the endpoints the stack forwards in) and the metadata address
// 169.254.170.2. No interface, so no route, leads out of it: whatever the task may
// reach outside is a listener the stack opened inside and forwards, one port at a time.
//
// The namespace has no name: a descriptor of this process and the task's processes
// hold it, so it disappears with the task, and nothing of it outlives a crash of this
// process (whose tasks die with it).

// MetadataAddress is where Fargate serves a task's metadata and credentials
// (169.254.170.2:80): inside each isolated task's namespace, the stack's metadata
// server answers there for that task only.
var MetadataAddress = netip.AddrPortFrom(netip.AddrFrom4([4]byte{169, 254, 170, 2}), 80)

// netns is a network namespace of its own, held open by f.
type netns struct {
	f  *os.File
	fd int
}

// hostNetns is this process's own network namespace, which every thread returns to.
var hostNetns = sync.OnceValues(func() (*os.File, error) {
	var f *os.File
	err := onLockedThread(func() (err error) {
		f, err = os.Open("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open this process's network namespace: %w", err)
	}
	return f, nil
})

// onLockedThread runs fn on an OS thread of its own. A thread fn left changed (fn
// reports that by returning an error wrapping errThreadTainted) is never used again:
// its goroutine parks for good, locked to it. (Not ended: the thread may have forked a
// child once, which the kernel would then send its parent-death signal; spawner.go.)
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		errc <- err
		if errors.Is(err, errThreadTainted) {
			select {}
		}
		runtime.UnlockOSThread()
	}()
	return <-errc
}

var errThreadTainted = errors.New("the thread could not return to this process's network namespace")

// inNetns runs fn on a thread that has joined the namespace target (a new namespace,
// created on the thread, when target is nil; fn then receives its descriptor), and
// returns the thread to this process's namespace. Sockets fn opens belong to the
// namespace they were opened in for good, whichever thread uses them later.
func inNetns(target *netns, fn func() error) error {
	host, err := hostNetns()
	if err != nil {
		return err
	}
	return onLockedThread(func() error {
		var err error
		if target == nil {
			err = unix.Unshare(unix.CLONE_NEWNET)
		} else {
			err = unix.Setns(target.fd, unix.CLONE_NEWNET)
		}
		if err != nil {
			return fmt.Errorf("enter a network namespace: %w", err)
		}
		err = fn()
		if back := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); back != nil {
			return errors.Join(err, fmt.Errorf("%w: %w", errThreadTainted, back))
		}
		return err
	})
}

// newNetns creates a network namespace whose loopback interface is up, with
// MetadataAddress's address on it.
func newNetns() (*netns, error) {
	var ns *netns
	err := inNetns(nil, func() error {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return fmt.Errorf("open the new network namespace: %w", err)
		}
		if err := upLoopback(MetadataAddress.Addr()); err != nil {
			f.Close()
			return err
		}
		ns = &netns{f: f, fd: int(f.Fd())}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create a network namespace: %w", err)
	}
	return ns, nil
}

// upLoopback brings the calling thread's namespace's lo up (which gives it
// 127.0.0.1/8) and adds extra/32 to it.
func upLoopback(extra netip.Addr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	lo, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, lo); err != nil {
		return fmt.Errorf("read lo's flags: %w", err)
	}
	lo.SetUint16(lo.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	a := extra.As4()
	for _, set := range []struct {
		req  uint
		addr []byte
	}{{unix.SIOCSIFADDR, a[:]}, {unix.SIOCSIFNETMASK, []byte{255, 255, 255, 255}}} {
		ifr, err := unix.NewIfreq("lo:ecs")
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(set.addr); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, set.req, ifr); err != nil {
			return fmt.Errorf("add %s/32 to lo: %w", extra, err)
		}
	}
	return nil
}

// listen opens a TCP listener on addr inside the namespace.
func (ns *netns) listen(addr netip.AddrPort) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	return ln, err
}

// dial connects to addr inside the namespace.
func (ns *netns) dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	return c, err
}

// id names the namespace as /proc/<pid>/ns/net does ("net:[<inode>]").
func (ns *netns) id() string {
	id, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", ns.fd))
	return id
}

func (ns *netns) close() error { return ns.f.Close() }
