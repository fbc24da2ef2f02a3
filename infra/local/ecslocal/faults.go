package ecslocal

import (
	"slices"
	"sync"
	"time"
)

// CapacityUnavailableReason is the failure reason Fargate reports when it has no capacity.
const CapacityUnavailableReason = "Capacity is unavailable at this time. Please try again later or in a different availability zone"

// faultState holds the switches. A count n > 0 applies to the next n occasions, n < 0 to
// every one until cleared, 0 to none.
type faultState struct {
	runTaskErr      ErrorType
	runTaskErrCount int
	capacityCount   int
	crashCount      int
	maxTasks        int
	launchDelay     time.Duration
	hold            chan struct{} // closed by the release HoldLaunches returned
}

func takeCount(n *int) bool {
	switch {
	case *n > 0:
		*n--
		return true
	case *n < 0:
		return true
	}
	return false
}

// FailRunTask makes the next times RunTask calls (every call when times < 0) answer with an
// API error of type t, before anything else happens: ThrottlingException (400) and
// ServerException (500) are what ECS sends under load. The SDK retries both, so a test that
// wants the error itself should fail more calls than the client's attempts.
func (s *Server) FailRunTask(t ErrorType, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.runTaskErr, s.faults.runTaskErrCount = t, times
}

// RefuseCapacity makes the next times RunTask calls (every call when times < 0) start no
// task and report a failure with CapacityUnavailableReason instead, as Fargate does.
func (s *Server) RefuseCapacity(times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.capacityCount = times
}

// CrashTasks makes the next times tasks (every task when times < 0) die right after they
// start: the container exits with code 1 before running anything, and the task stops with
// stopCode EssentialContainerExited.
func (s *Server) CrashTasks(times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.crashCount = times
}

// SetMaxTasks bounds the tasks alive at once (n <= 0: no bound). RunTask reports a capacity
// failure for every task past the bound.
func (s *Server) SetMaxTasks(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.maxTasks = n
}

// SetLaunchDelay sets the time from RunTask until the process starts for tasks run from
// now on: half in PROVISIONING, half in PENDING. Fargate takes 30-90 s.
func (s *Server) SetLaunchDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.launchDelay = max(d, 0)
}

// HoldLaunches keeps every task that comes to the end of its launch delay from now on
// in PENDING, as a slow image pull does, until release is called or the task is
// stopped: a test acts while a sandbox is surely still starting, then lets it start.
func (s *Server) HoldLaunches() (release func()) {
	hold := make(chan struct{})
	s.mu.Lock()
	s.faults.hold = hold
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.faults.hold == hold {
				s.faults.hold = nil
			}
			s.mu.Unlock()
			close(hold)
		})
	}
}

// launchHeld waits while launches are held, and reports whether t is still wanted.
func (s *Server) launchHeld(t *task) bool {
	s.mu.Lock()
	hold := s.faults.hold
	s.mu.Unlock()
	if hold == nil {
		return true
	}
	select {
	case <-hold:
		return true
	case <-t.stop:
		return false
	}
}

// ClearFaults switches every fault off; the launch delay and the task bound stay.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.runTaskErr, s.faults.runTaskErrCount = "", 0
	s.faults.capacityCount, s.faults.crashCount = 0, 0
}

// Request is one decoded API request.
type Request struct {
	// Operation is the ECS operation, e.g. "RunTask".
	Operation string
	// Input is the decoded input: *RunTaskRequest, *DescribeTasksRequest, *StopTaskRequest,
	// *ListTasksRequest, *ListTagsForResourceRequest or *DescribeTaskDefinitionRequest.
	Input any
	// At is when the request arrived.
	At time.Time
}

// Requests returns every request decoded so far, oldest first, including those answered
// with an error (but not those refused for their signature or by the Authorizer, which
// are never decoded). The inputs are the recorded values themselves: read them, do not change them.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// RunTaskRequests returns the decoded RunTask inputs, oldest first. They are the recorded
// values themselves: read them, do not change them.
func (s *Server) RunTaskRequests() []*RunTaskRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*RunTaskRequest
	for _, r := range s.requests {
		if in, ok := r.Input.(*RunTaskRequest); ok {
			out = append(out, in)
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

func (s *Server) record(op string, in any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Operation: op, Input: in, At: time.Now()})
}
