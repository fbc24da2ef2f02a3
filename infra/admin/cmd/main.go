// Command admin is the operator's command line: make admin ARGS="[-local] <command> …".
// See infra/admin and docs/OPERATIONS.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sandgate/sandgate/infra/admin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := admin.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
