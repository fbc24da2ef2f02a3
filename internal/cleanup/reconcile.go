package cleanup

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// Reconciliation is what Reconcile found and did.
type Reconciliation struct {
	// SlotsReturned counts the slots given back for tasks ECS no longer runs whose
	// stop event never came.
	SlotsReturned int
	// Counter is the capacity counter's check against the records, after those
	// slots went back.
	Counter state.CapacityCheck
}

// Corrections is how many slots the reconciliation put right: the slots given back,
// plus how far the counter moved.
func (r Reconciliation) Corrections() int {
	n := r.SlotsReturned
	if r.Counter.Corrected {
		n += abs(r.Counter.Drift())
	}
	return n
}

// Reconcile makes the capacity counter right again, from the records and ECS: every
// STOPPED record that still holds its task's slot, while ECS runs no task of that
// user and generation, gets the slot back (the task's stop event was lost; once the
// record has been STOPPED for StopEventGrace); then the counter is recomputed from
// the records that hold a slot and corrected, conditional on the value it read (a
// start or stop meanwhile leaves it for the next check). Each cleanup pass ends with
// it; an operator runs it on demand. It changes nothing a live lease holds.
func (c *Cleaner) Reconcile(ctx context.Context) (Reconciliation, error) {
	p := &pass{}
	tasks, err := c.Tasks.List(ctx)
	if err != nil {
		return Reconciliation{}, fmt.Errorf("reconcile: %w", err)
	}
	p.tasks, p.listed = tasks, true
	items, err := c.Store.PoolTasks(ctx)
	if err != nil {
		return Reconciliation{}, fmt.Errorf("reconcile: %w", err)
	}
	p.pool = make(map[string]state.PoolTask, len(items))
	for _, it := range items {
		p.pool[it.ID] = it
	}
	c.backfill(ctx, p)
	err = c.Store.ListSandboxesIndexed(ctx, func(sb *state.Sandbox) error {
		if sb.State == state.Stopped && sb.HoldsSlot() {
			p.slotted = append(p.slotted, sb)
		}
		return ctx.Err()
	})
	if err != nil {
		return Reconciliation{}, fmt.Errorf("reconcile: list sandboxes: %w", err)
	}
	r := Reconciliation{SlotsReturned: c.returnLostSlots(ctx, p)}
	r.Counter, _ = c.reconcileCounter(ctx, p)
	if len(p.errs) > 0 {
		return r, fmt.Errorf("reconcile: %w", errors.Join(p.errs...))
	}
	return r, nil
}

// returnLostSlots gives back the slots of p.slotted whose task ECS no longer runs,
// and returns how many it gave back. Without the task list it judges nothing.
func (c *Cleaner) returnLostSlots(ctx context.Context, p *pass) int {
	if !p.listed {
		return 0
	}
	grace := c.StopEventGrace
	if grace == 0 {
		grace = DefaultStopEventGrace
	}
	n := 0
	for _, sb := range p.slotted {
		if c.now().Sub(sb.StateSince) < grace || running(p.tasks, sb) {
			continue
		}
		back, err := c.Store.ReturnSlot(ctx, sb.UserID, sb.Slot)
		if err != nil {
			p.fail(err)
			c.Log.ErrorContext(ctx, "return a lost task's slot failed", logging.UserID, sb.UserID, logging.Error, err.Error())
			continue
		}
		if back {
			n++
			c.Log.WarnContext(ctx, "capacity slot given back: ECS runs no such task and its stop event never came",
				logging.UserID, sb.UserID, logGeneration, sb.Slot, logging.TaskARN, sb.TaskARN, logStoppedAt, sb.StateSince)
		}
	}
	n += c.returnLostPoolSlots(ctx, p)
	p.sum.Corrections += n
	return n
}

// returnLostPoolSlots gives back the slots of pool items whose task ECS no longer runs
// (its stop event was lost, or RunTask never started it) once they are older than the
// grace, and returns how many it gave back.
func (c *Cleaner) returnLostPoolSlots(ctx context.Context, p *pass) int {
	grace := max(c.StopEventGrace, c.OrphanGrace)
	if grace <= 0 {
		grace = max(DefaultStopEventGrace, DefaultOrphanGrace)
	}
	n := 0
	for _, it := range p.pool {
		if c.now().Sub(it.ReservedAt) < grace || runsPoolTask(p.tasks, it) {
			continue
		}
		back, err := c.Store.RemovePool(ctx, it.ID, "ECS runs no such task")
		if err != nil {
			p.fail(err)
			c.Log.ErrorContext(ctx, "return a lost pool task's slot failed", logPoolID, it.ID, logging.Error, err.Error())
			continue
		}
		if back {
			n++
			c.Log.WarnContext(ctx, "capacity slot given back: ECS runs no such pool task and its stop event never came",
				logPoolID, it.ID, logging.TaskARN, it.TaskARN, logging.State, string(it.State))
		}
	}
	return n
}

// runsPoolTask reports whether ECS still runs pool item it's task.
func runsPoolTask(tasks []launcher.Task, it state.PoolTask) bool {
	for _, t := range tasks {
		if t.LastStatus != "STOPPED" && (t.PoolID == it.ID || it.TaskARN != "" && t.ARN == it.TaskARN) {
			return true
		}
	}
	return false
}

// running reports whether ECS still runs the task that holds sb's slot: the task the
// record names, or one tagged with its user and the slot's generation.
func running(tasks []launcher.Task, sb *state.Sandbox) bool {
	for _, t := range tasks {
		if t.LastStatus == "STOPPED" {
			continue
		}
		if sb.TaskARN != "" && t.ARN == sb.TaskARN || t.UserID == sb.UserID && t.Generation == sb.Slot {
			return true
		}
	}
	return false
}

// reconcileCounter corrects the capacity counter to the records that hold a slot.
func (c *Cleaner) reconcileCounter(ctx context.Context, p *pass) (state.CapacityCheck, error) {
	check, err := c.Store.ReconcileCapacity(ctx)
	if err != nil {
		p.fail(err)
		c.Log.ErrorContext(ctx, "capacity check failed", logging.Error, err.Error())
		return check, err
	}
	switch {
	case check.Corrected:
		p.sum.Corrections += abs(check.Drift())
		c.Log.WarnContext(ctx, "capacity counter corrected to the records that hold a slot",
			logCapacity, check.Counter, logSlotsHeld, check.Held, logDrift, check.Drift())
	case check.Moved:
		c.Log.InfoContext(ctx, "capacity counter moved during its check; the next pass checks again",
			logCapacity, check.Counter, logSlotsHeld, check.Held)
	}
	return check, nil
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
