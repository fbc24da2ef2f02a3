package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/auth"
)

func (r *runner) list(fl *flag.FlagSet) execution {
	all := fl.Bool("all", false, "also the STOPPED records that hold no capacity slot")
	states := fl.String("state", "", "only these `states` (comma-separated: STARTING,RUNNING,STOPPING,STOPPED,PURGING)")
	prefix := fl.String("user-prefix", "", "only users whose id starts with this")
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: noArgs, run: func(ctx context.Context) error {
		f := ops.Filter{All: *all, UserPrefix: *prefix}
		if *states != "" {
			f.States = strings.Split(*states, ",")
		}
		rows, err := r.admin.List(ctx, f)
		r.audit.Record(ctx, "list", "", err, "sandboxes", len(rows))
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(rows)
		}
		now := time.Now()
		fmt.Fprintf(r.stdout, "%d sandbox(es) in %s\n", len(rows), r.where)
		w := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "USER\tSTATE\tGEN\tAGE\tTASK\tTASK STATUS\tLAST SYNC\tCONNS\tQUEUED")
		for _, s := range rows {
			st := s.State
			if s.Expired {
				st += " (lease expired)"
			}
			if s.Warm {
				st += " warm"
			}
			sync := "-"
			if s.LastSync != nil {
				sync = ago(now, *s.LastSync) + " ago"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\n", s.UserID, st, s.Generation, ago(now, s.Since),
				orDash(shortTask(s.Task)), orDash(s.TaskStatus), sync, s.Connections, s.Queued)
		}
		return w.Flush()
	}}
}

// shortTask is a task ARN's id.
func shortTask(arn string) string {
	if i := strings.LastIndex(arn, "/"); i >= 0 {
		return arn[i+1:]
	}
	return arn
}

func (r *runner) inspect(fl *flag.FlagSet) execution {
	var user string
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: oneUser(&user), run: func(ctx context.Context) error {
		rep, err := r.admin.Inspect(ctx, user)
		r.audit.Record(ctx, "inspect", user, err)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(rep)
		}
		r.printReport(rep)
		return nil
	}}
}

func (r *runner) printReport(rep *ops.Report) {
	now := time.Now()
	out := r.stdout
	fmt.Fprintf(out, "user %s (%s)\n", rep.UserID, r.where)
	if s := rep.Sandbox; s != nil {
		fmt.Fprintf(out, "sandbox:      %s since %s (%s ago), generation %d", s.State, s.Since.UTC().Format(time.RFC3339), ago(now, s.Since), s.Generation)
		if s.Warm {
			fmt.Fprint(out, ", from the warm pool")
		}
		fmt.Fprintln(out)
		fmt.Fprintf(out, "lease:        until %s (%s)", s.LeaseDeadline.UTC().Format(time.RFC3339), until(now, s.LeaseDeadline))
		if s.Expired {
			fmt.Fprint(out, ": its holder is presumed dead; stop reaps it (so would the next cleanup pass)")
		}
		fmt.Fprintln(out)
		fmt.Fprintf(out, "capacity:     holds a slot: %v\n", s.HoldsSlot)
		if s.Reason != "" {
			fmt.Fprintf(out, "last stop:    %s\n", s.Reason)
		}
	} else {
		fmt.Fprintln(out, "sandbox:      no record")
	}
	if t := rep.Task; t != nil {
		fmt.Fprintf(out, "task:         %s %s (desired %s), created %s ago", shortTask(t.ARN), t.LastStatus, t.DesiredStatus, ago(now, t.CreatedAt))
		if t.StoppedReason != "" {
			fmt.Fprintf(out, ", %s: %s", t.StopCode, t.StoppedReason)
		}
		fmt.Fprintln(out)
	} else if rep.Sandbox != nil && rep.Sandbox.Task != "" {
		fmt.Fprintf(out, "task:         %s not known to ECS\n", shortTask(rep.Sandbox.Task))
	}
	fmt.Fprintf(out, "connections:  %d", len(rep.Connections))
	for _, c := range rep.Connections {
		fmt.Fprintf(out, " %s (%s ago)", c.ID, ago(now, c.ConnectedAt))
	}
	fmt.Fprintln(out)
	if a := rep.Access; a != nil {
		fmt.Fprintf(out, "limits:       %d connection(s) counted", a.Counted)
		if a.NotBefore != nil {
			fmt.Fprintf(out, "; revoked at %s (URLs signed before refused)", a.NotBefore.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "inbox:        %d frame(s), %d bytes", rep.Inbox.Queued, rep.Inbox.Bytes)
	if rep.Inbox.Oldest != nil {
		fmt.Fprintf(out, ", oldest %s ago", ago(now, *rep.Inbox.Oldest))
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "storage:      %s: %d object(s), %d bytes", rep.Storage.Prefix, rep.Storage.Objects, rep.Storage.Bytes)
	if rep.Storage.LastSync != nil {
		fmt.Fprintf(out, ", last sync %s ago (generation %d)", ago(now, *rep.Storage.LastSync), rep.Storage.SyncGeneration)
	} else {
		fmt.Fprint(out, ", never synced")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "recent tasks: %d stopped\n", len(rep.RecentTasks))
	for _, t := range rep.RecentTasks {
		gen := ""
		if t.Generation > 0 {
			gen = fmt.Sprintf(" generation %d,", t.Generation)
		}
		fmt.Fprintf(out, "  %s%s created %s ago: %s %s\n", shortTask(t.ARN), gen, ago(now, t.CreatedAt), orDash(t.StopCode), t.StoppedReason)
	}
	fmt.Fprintf(out, "items:        %s\n", strings.Join(rep.Items, ", "))
}

func until(now, t time.Time) string {
	if t.Before(now) {
		return "ran out " + ago(now, t) + " ago"
	}
	return "in " + t.Sub(now).Truncate(time.Second).String()
}

func (r *runner) stop(fl *flag.FlagSet) execution {
	var user string
	wait := fl.Bool("wait", false, "wait until the sandbox has stopped and given its capacity slot back")
	timeout := fl.Duration("timeout", ops.DefaultStopWait, "with -wait: give up after this long")
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: oneUser(&user), run: func(ctx context.Context) error {
		r.admin.StopWait = *timeout
		res, err := r.admin.Stop(ctx, user, *wait)
		if *asJSON && err == nil {
			return r.printJSON(res)
		}
		if res.Action != "" {
			fmt.Fprintf(r.stdout, "%s: %s (was %s, generation %d, task %s)\n", user, res.Action, res.State, res.Generation, orDash(shortTask(res.Task)))
		}
		if err != nil {
			return err
		}
		if res.Done {
			fmt.Fprintf(r.stdout, "%s: stopped; its capacity slot is back\n", user)
		} else if !*wait {
			fmt.Fprintf(r.stdout, "%s: the agent syncs and stops within the task's stop timeout (add -wait to wait)\n", user)
		}
		return nil
	}}
}

func (r *runner) revoke(fl *flag.FlagSet) execution {
	var user string
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: oneUser(&user), run: func(ctx context.Context) error {
		rev, err := r.admin.Revoke(ctx, user)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(rev)
		}
		fmt.Fprintf(r.stdout, "%s: revoked at %s; URLs signed before it are refused (WebSocket and HTTP API)\n", user, rev.NotBefore.UTC().Format(time.RFC3339Nano))
		fmt.Fprintf(r.stdout, "%s: closed %d connection(s)%s\n", user, len(rev.Closed), list(rev.Closed))
		// The functions' defaults (SIGNATURE_MAX_LIFETIME, SIGNATURE_CLOCK_SKEW); a stack
		// deployed with others shifts these times by the difference.
		full := auth.AcceptedFrom(rev.NotBefore, auth.DefaultMaxLifetime, auth.DefaultMaxLifetime, auth.DefaultClockSkew)
		short := auth.AcceptedFrom(rev.NotBefore, auth.DefaultTTL, auth.DefaultMaxLifetime, auth.DefaultClockSkew)
		fmt.Fprintf(r.stdout, "%s: a new URL is accepted when signed from %s with the full %s lifetime, from %s with the signers' default %s (the default maximum lifetime and %s clock skew)\n",
			user, full.UTC().Format(time.RFC3339), auth.DefaultMaxLifetime, short.UTC().Format(time.RFC3339), auth.DefaultTTL, auth.DefaultClockSkew)
		return nil
	}}
}

func list(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ": " + strings.Join(ids, " ")
}

func (r *runner) deleteUser(fl *flag.FlagSet) execution {
	var user string
	dry := fl.Bool("dry-run", false, "say what would be deleted, delete nothing")
	yes := fl.Bool("yes", false, "do not ask for confirmation")
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: oneUser(&user), run: func(ctx context.Context) error {
		plan, err := r.admin.PlanDeletion(ctx, user)
		if err != nil {
			return err
		}
		if *dry {
			r.audit.Record(ctx, "delete-user (dry run)", user, nil, "objects", plan.Objects, "items", len(plan.Items))
			if *asJSON {
				return r.printJSON(plan)
			}
			r.printPlan(plan)
			fmt.Fprintln(r.stdout, "dry run: nothing deleted")
			return nil
		}
		if !*asJSON {
			r.printPlan(plan)
		}
		if !*yes && !r.confirm(fmt.Sprintf("This revokes %s, stops their sandbox and deletes everything above.", user), user) {
			return errors.New("not confirmed; nothing done")
		}
		d, err := r.admin.DeleteUser(ctx, user)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(d)
		}
		fmt.Fprintf(r.stdout, "%s: deleted %d object(s), %d backup object(s) and %d item(s); kept %s\n", user, d.DeletedObjects, d.DeletedBackups, d.DeletedItems, d.Kept)
		return nil
	}}
}

func (r *runner) printPlan(d *ops.Deletion) {
	fmt.Fprintf(r.stdout, "user %s (%s)\n", d.UserID, r.where)
	fmt.Fprintf(r.stdout, "sandbox:  %s\n", orDash(d.State))
	fmt.Fprintf(r.stdout, "objects:  %d under %s (%d bytes)\n", d.Objects, d.Prefix, d.Bytes)
	fmt.Fprintf(r.stdout, "backups:  %d\n", d.Backups)
	fmt.Fprintf(r.stdout, "items:    %d: %s\n", len(d.Items), strings.Join(d.Items, ", "))
}

func (r *runner) reconcile(fl *flag.FlagSet) execution {
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: noArgs, run: func(ctx context.Context) error {
		res, err := r.admin.Reconcile(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(res)
		}
		c := res.Counter
		fmt.Fprintf(r.stdout, "slots given back for tasks ECS no longer runs: %d\n", res.SlotsReturned)
		switch {
		case c.Corrected:
			fmt.Fprintf(r.stdout, "capacity counter corrected: %d → %d (the records and pool items that hold a slot)\n", c.Counter, c.Held)
		case c.Moved:
			fmt.Fprintf(r.stdout, "capacity counter moved while it was checked (%d read, %d held); run reconcile again\n", c.Counter, c.Held)
		default:
			fmt.Fprintf(r.stdout, "capacity counter right: %d\n", c.Counter)
		}
		fmt.Fprintf(r.stdout, "running tasks no live lease names: %d%s\n", len(res.Unnamed), list(res.Unnamed))
		if len(res.Unnamed) > 0 {
			fmt.Fprintln(r.stdout, "  (the cleanup pass stops each once it is 2 minutes old; a launch whose record is not written yet is one)")
		}
		return nil
	}}
}
