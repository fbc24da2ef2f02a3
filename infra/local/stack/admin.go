package stack

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// Admin returns internal/admin over the stack, as its operator: the code make admin
// runs, on the stack's clients (the demo page's operator panel). Its audit lines go to
// log, naming the operator as STS does.
func (s *Stack) Admin(ctx context.Context, log *slog.Logger) *ops.Admin {
	tasks := launcher.New(s.ECSClient(), launcher.Config{Cluster: s.Cluster}, log)
	caller := "the local operator"
	stsc := sts.NewFromConfig(s.AWS, func(o *sts.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_STS"]) })
	if arn, err := ops.CallerIdentity(ctx, stsc); err == nil {
		caller = arn
	}
	return &ops.Admin{
		Store:   s.Store,
		Tasks:   tasks,
		Bucket:  s3bucket.New(s.S3Client(), s.Bucket),
		Conns:   &relay.Relay{API: relay.NewClient(s.AWS, s.Gateway.ManagementEndpoint()), Conns: s.Store, Log: log},
		Cleaner: &cleanup.Cleaner{Store: s.Store, Tasks: tasks, Log: log},
		Audit:   &ops.Audit{Log: log, Caller: caller},
		Log:     log,
	}
}
