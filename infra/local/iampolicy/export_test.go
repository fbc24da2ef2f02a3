package iampolicy

import "syscall"

// KillForTest kills the running simulator process, as a crash would, and returns
// once it has exited.
func (e *Evaluator) KillForTest() {
	e.pmu.Lock()
	c := e.child
	e.pmu.Unlock()
	_ = c.p.Signal(syscall.SIGKILL)
	<-c.p.Done()
	<-c.dead
}
