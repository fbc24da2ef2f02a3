package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"
)

func (r *runner) listBackups(fl *flag.FlagSet) execution {
	var user string
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: oneUser(&user), run: func(ctx context.Context) error {
		rows, err := r.admin.ListBackups(ctx, user)
		r.audit.Record(ctx, "list-backups", user, err, "backups", len(rows))
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(rows)
		}
		fmt.Fprintf(r.stdout, "%d backup(s) of %s in %s\n", len(rows), user, r.where)
		w := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tAGE\tFILES\tBYTES\tSYNC (GENERATION, AT)\tREASON")
		now := time.Now()
		for _, b := range rows {
			if b.Problem != "" {
				fmt.Fprintf(w, "%s\t%s\t-\t-\t-\tunusable: %s\n", b.ID, ago(now, b.Created), b.Problem)
				continue
			}
			sync := "-"
			if !b.SyncedAt.IsZero() {
				sync = fmt.Sprintf("%d, %s", b.Generation, b.SyncedAt.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", b.ID, ago(now, b.Created), b.Files, b.Bytes, sync, orDash(b.Reason))
		}
		return w.Flush()
	}}
}

func (r *runner) restoreBackup(fl *flag.FlagSet) execution {
	var user string
	from := fl.String("from", "", "the backup: its `id` (list-backups), or an RFC 3339 time (the newest backup made at or before it)")
	yes := fl.Bool("yes", false, "do not ask for confirmation")
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{check: func(args []string) error {
		if err := oneUser(&user)(args); err != nil {
			return err
		}
		if *from == "" {
			return errors.New("--from is required: a backup id from list-backups, or an RFC 3339 time")
		}
		return nil
	}, run: func(ctx context.Context) error {
		if !*yes && !r.confirm(fmt.Sprintf("This stops %s's sandbox and replaces their files with the backup %s (the files as they are now are backed up first).", user, *from), user) {
			return errors.New("not confirmed; nothing done")
		}
		res, err := r.admin.RestoreBackup(ctx, user, *from)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.printJSON(res)
		}
		if res.Stopped != "" {
			fmt.Fprintf(r.stdout, "%s: sandbox: %s\n", user, res.Stopped)
		}
		fmt.Fprintf(r.stdout, "%s: restored backup %s: %d added, %d replaced, %d deleted, %d unchanged (%d copies, %d bytes, server-side)\n",
			user, res.Backup, len(res.Added), len(res.Replaced), len(res.Deleted), res.Unchanged, res.Copied, res.CopiedBytes)
		for _, p := range res.Added {
			fmt.Fprintf(r.stdout, "  + %s\n", p)
		}
		for _, p := range res.Replaced {
			fmt.Fprintf(r.stdout, "  ~ %s\n", p)
		}
		for _, p := range res.Deleted {
			fmt.Fprintf(r.stdout, "  - %s\n", p)
		}
		fmt.Fprintf(r.stdout, "%s: to undo: restore-backup --from %s %s\n", user, res.Undo, user)
		return nil
	}}
}
