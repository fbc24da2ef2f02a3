package stack

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/demopage"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/launcher"
)

// S3Client returns a client of the stack's bucket endpoint, signed as the operator (in
// R2 mode with the parent API token's key).
func (s *Stack) S3Client() *s3.Client {
	if s.R2 != nil {
		return s.r2Client()
	}
	return s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
}

// ECSClient returns a client of the stack's ECS endpoint.
func (s *Stack) ECSClient() *ecs.Client {
	return ecs.NewFromConfig(s.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
}

// ServeDemoPage serves the demo page and its dev-only endpoints (signing, restarting a
// sandbox, listing its files, the operator panel's list, inspect, stop and revoke) on the gateway, signed with the local development secret.
// The dev-only endpoints refuse requests from tasks (notFromTasks).
func (s *Stack) ServeDemoPage(log *slog.Logger) error {
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		return err
	}
	(&demopage.Handler{
		Signer: signer, WSURL: s.Gateway.WebSocketURL(), HTTPURL: s.Gateway.HTTPURL(),
		Sandboxes: s.Store, Objects: s.S3Client(), Bucket: s.Bucket, Log: log,
		Tasks:    launcher.New(s.ECSClient(), launcher.Config{Cluster: s.Cluster}, log),
		Operator: s.Admin(context.Background(), log),
	}).Register(devOnlyMux{gateway: s.Gateway, tasks: s.ECS.TaskAddresses()})
	return nil
}
