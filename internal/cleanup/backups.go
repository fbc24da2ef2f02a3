package cleanup

import (
	"context"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// backupReserve is kept off the invocation's deadline for what follows the backup
// step: the summary, the metrics.
const backupReserve = 20 * time.Second

// backups is the pass's last step: each user's prefix whose marker changed since
// their newest backup is backed up (internal/backup), the backups the retention no
// longer keeps are expired, and the users this pass purged lose their backups too.
// It runs after everything else, within the invocation's time less backupReserve: a
// user it did not reach is backed up by the next pass, as the marker still differs.
func (c *Cleaner) backups(ctx context.Context, p *pass) {
	if c.Backups == nil || c.DryRun {
		return
	}
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-backupReserve))
		defer cancel()
	}
	purged := map[string]bool{}
	for _, u := range p.purged {
		purged[u] = true
	}
	users := make([]string, 0, len(p.users))
	for _, u := range p.users {
		if !purged[u] {
			users = append(users, u)
		}
	}
	sum, err := c.Backups.RunForgetting(ctx, users, p.purged)
	p.sum.Backups = &sum
	p.sum.Errors += sum.Errors
	if err != nil {
		p.fail(fmt.Errorf("backups: %w", err))
	}
	c.Log.InfoContext(ctx, "backups done", "users", sum.Users, "backedUp", sum.BackedUp, "unchanged", sum.Unchanged,
		"deferred", sum.Deferred, "unhashed", sum.Unhashed, "copied", sum.Copied, "copiedBytes", sum.CopiedBytes, "expired", sum.Expired,
		"swept", sum.Swept, "requests", sum.Requests, "busy", sum.Busy, logErrors, sum.Errors)
	if err != nil {
		c.Log.ErrorContext(ctx, "backups stopped", logging.Error, err.Error())
	}
}
