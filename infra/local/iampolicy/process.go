package iampolicy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandgate/sandgate/infra/local/proc"
)

// errDied: the simulator process ended while a request was in flight.
var errDied = errors.New("policy evaluator process died")

// child is one running simulate.mjs process: requests go out on its standard input
// as JSON lines, answers come back on its standard output in any order, matched by id.
type child struct {
	p      *proc.Process
	stdin  io.WriteCloser
	stderr *tail

	wmu sync.Mutex // one line at a time on stdin

	mu      sync.Mutex
	pending map[uint64]chan *wireAnswer
	dead    chan struct{} // closed when stdout ends
	deadErr error         // set before dead is closed
}

// startChild runs node script nodeModules and waits for its ready line.
func startChild(ctx context.Context, node, script, nodeModules string, timeout time.Duration) (*child, error) {
	cmd := exec.Command(node, script, nodeModules)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w", err)
	}
	c := &child{stdin: stdin, stderr: &tail{max: 8 << 10}, pending: map[uint64]chan *wireAnswer{}, dead: make(chan struct{})}
	cmd.Stderr = c.stderr
	if c.p, err = proc.Start(cmd); err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w", err)
	}
	ready := make(chan *wireAnswer, 1)
	go c.read(bufio.NewReaderSize(stdout, 64<<10), ready)

	t := time.NewTimer(timeout)
	defer t.Stop()
	var a *wireAnswer
	select {
	case a = <-ready:
	case <-c.dead:
		// The first line, if any, was handed over before the end was marked.
		select {
		case a = <-ready:
		default:
			c.stop(time.Second)
			return nil, fmt.Errorf("start policy evaluator: %w", c.deadErr)
		}
	case <-t.C:
		c.stop(time.Second)
		return nil, fmt.Errorf("start policy evaluator: no ready line within %s; stderr: %s", timeout, c.stderr)
	case <-ctx.Done():
		c.stop(time.Second)
		return nil, fmt.Errorf("start policy evaluator: %w", ctx.Err())
	}
	switch {
	case a.Fatal != "":
		c.stop(time.Second)
		return nil, fmt.Errorf("start policy evaluator: %s", a.Fatal)
	case !a.Ready || a.Version != SimulatorVersion:
		c.stop(time.Second)
		return nil, fmt.Errorf("start policy evaluator: iam-simulate %q answered, want %s: run `npm ci` at the repository root", a.Version, SimulatorVersion)
	}
	return c, nil
}

// read dispatches answers until stdout ends, then marks the child dead.
func (c *child) read(r *bufio.Reader, ready chan<- *wireAnswer) {
	first := true
	var readErr error
	for {
		line, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			var a wireAnswer
			if jerr := json.Unmarshal(line, &a); jerr != nil {
				readErr = fmt.Errorf("unreadable answer %.200q: %w", line, jerr)
				break
			}
			if first {
				first = false
				ready <- &a
				if a.Fatal != "" {
					continue
				}
			} else {
				c.mu.Lock()
				ch := c.pending[a.ID]
				delete(c.pending, a.ID)
				c.mu.Unlock()
				if ch != nil {
					ch <- &a
				}
			}
		}
		if err != nil {
			break
		}
	}
	if readErr != nil {
		// A garbled stream cannot be trusted any more: end the process.
		_ = c.p.Signal(syscall.SIGKILL)
	}
	// Let the process finish so its exit status and last stderr lines are known.
	t := time.NewTimer(2 * time.Second)
	select {
	case <-c.p.Done():
	case <-t.C:
	}
	t.Stop()
	exit := "still running"
	select {
	case <-c.p.Done():
		exit = fmt.Sprint(c.p.Err())
	default:
	}
	c.mu.Lock()
	if readErr == nil {
		readErr = errors.New("its output ended")
	}
	c.deadErr = fmt.Errorf("%w: %v (exit: %s); stderr: %s", errDied, readErr, exit, c.stderr)
	c.mu.Unlock()
	close(c.dead)
}

// call sends one request line and waits for its answer.
func (c *child) call(ctx context.Context, id uint64, line []byte) (*wireAnswer, error) {
	ch := make(chan *wireAnswer, 1)
	c.mu.Lock()
	select {
	case <-c.dead:
		err := c.deadErr
		c.mu.Unlock()
		return nil, err
	default:
	}
	c.pending[id] = ch
	c.mu.Unlock()

	c.wmu.Lock()
	_, err := c.stdin.Write(line)
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		select {
		case <-c.dead:
			return nil, c.deadErr
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("%w: write: %v", errDied, err)
		}
	}
	select {
	case a := <-ch:
		return a, nil
	case <-c.dead:
		// An answer may have been dispatched just before the end.
		select {
		case a := <-ch:
			return a, nil
		default:
		}
		return nil, c.deadErr
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	}
}

func (c *child) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// stop closes standard input (the script answers what it has, then exits) and stops
// the process after grace.
func (c *child) stop(grace time.Duration) {
	c.wmu.Lock()
	_ = c.stdin.Close()
	c.wmu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.p.Done():
	case <-t.C:
	}
	_ = c.p.Stop(grace)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "(empty)"
	}
	return s
}
