package admin

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// New builds the Admin of a stack from the Cleanup function's configuration (its
// table, cluster, bucket and storage, management endpoint): the same clients the
// cleanup pass builds, so that reconcile is that pass's code and a purge its purge.
func New(c cleanup.Config, awsCfg aws.Config, log *slog.Logger, audit *Audit) *Admin {
	cl := cleanup.New(c, awsCfg, log, nil)
	return &Admin{
		Store:   cl.Store.(*state.Store),
		Tasks:   cl.Tasks.(*launcher.Launcher),
		Bucket:  cl.Bucket,
		Conns:   cl.Relay.(*relay.Relay),
		Cleaner: cl,
		Audit:   audit,
		Log:     log,
	}
}
