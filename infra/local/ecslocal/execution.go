package ecslocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/logging"
)

// What ECS does with a task's execution role before its container starts, in Fargate's
// order: the registry's auth token and the Secrets ("execution resources"), the image
// pull, then the awslogs stream (the log driver's validation when the container is
// created). Each refusal stops the task with TaskFailedToStart and the reason Fargate
// gives. A secret's value reaches the process environment only: it is never logged.

// Stopped reasons' beginnings, as Fargate words them.
const (
	reasonExecResources = "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
	reasonSecrets       = reasonExecResources + "unable to retrieve secret from asm: service call has been retried 1 time(s): "
	reasonRegistryAuth  = reasonExecResources + "unable to retrieve ecr registry auth: service call has been retried 3 time(s): "
	reasonLogger        = "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed to create Cloudwatch log stream: "
)

// secretRef is one of a definition's Secrets: variable name and where its value is.
type secretRef struct {
	name, valueFrom string
	// arn is the secret's ARN; jsonKey, stage and versionID the optional fields after it.
	arn, jsonKey, stage, versionID string
}

// parseValueFrom reads arn:aws:secretsmanager:<region>:<account>:secret:<name>, alone or
// followed by :<json-key>:<version-stage>:<version-id> (each may be empty), as ECS does.
func parseValueFrom(v string) (secretRef, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 7 || parts[0] != "arn" || parts[2] != "secretsmanager" || parts[5] != "secret" || parts[6] == "" {
		return secretRef{}, fmt.Errorf("ValueFrom %q is not a Secrets Manager secret ARN (ecslocal reads no Systems Manager parameters)", v)
	}
	ref := secretRef{valueFrom: v, arn: strings.Join(parts[:7], ":")}
	switch len(parts) {
	case 7:
	case 10:
		ref.jsonKey, ref.stage, ref.versionID = parts[7], parts[8], parts[9]
	default:
		return secretRef{}, fmt.Errorf("ValueFrom %q must be a secret's ARN, alone or followed by :json-key:version-stage:version-id", v)
	}
	return ref, nil
}

// ecrImage is an image in a private ECR repository.
type ecrImage struct {
	account, region, host, repository string
	// ref is the tag (latest when none) or the digest.
	ref string
}

var ecrImageForm = regexp.MustCompile(`^((\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)/([a-z0-9][a-z0-9._/-]*?)(?::([\w][\w.-]{0,127})|@(sha256:[a-f0-9]{64}))?$`)

// parseECRImage recognises <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest].
func parseECRImage(image string) (ecrImage, bool) {
	m := ecrImageForm.FindStringSubmatch(image)
	if m == nil {
		return ecrImage{}, false
	}
	img := ecrImage{host: m[1], account: m[2], region: m[3], repository: m[4], ref: m[5]}
	if m[6] != "" {
		img.ref = m[6]
	}
	if img.ref == "" {
		img.ref = "latest"
	}
	return img, true
}

// executionSession returns the execution role's current session.
func (s *Server) executionSession(ctx context.Context, t *task) (identity.Credentials, *identity.Principal, error) {
	if t.ident == nil || t.ident.exec == nil {
		return identity.Credentials{}, nil, errors.New("the task has no execution role")
	}
	return s.sessionCredentials(ctx, t.ident.exec)
}

// needsExecutionRole reports whether ECS acts with the execution role to start t.
func needsExecutionRole(t *task) bool {
	_, ecr := parseECRImage(t.def.image)
	return ecr || len(t.def.secrets) > 0 || t.def.logGroup != ""
}

// retrieveExecutionResources asks for the registry's auth token (an ECR image) and reads
// the Secrets; it returns the secrets' values by variable, or the stopped reason.
func (s *Server) retrieveExecutionResources(ctx context.Context, t *task, c identity.Credentials, p *identity.Principal) (map[string]string, string) {
	if img, ok := parseECRImage(t.def.image); ok {
		token := iampolicy.ECRPull(iampolicy.Env{Region: img.region, Account: img.account}, img.repository)[0]
		if err := s.authorizeAs(ctx, p, token); err != nil {
			return nil, reasonRegistryAuth + refusal(err)
		}
	}
	if len(t.def.secrets) == 0 {
		return nil, ""
	}
	if s.secrets == "" {
		return nil, reasonSecrets + "no Secrets Manager endpoint is configured (ecslocal Server.SecretsEndpoint)"
	}
	client := secretsmanager.New(secretsmanager.Options{
		Region:       s.region,
		BaseEndpoint: aws.String(s.secrets),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
		HTTPClient:   awsconf.NewHTTPClient(),
	})
	values := make(map[string]string, len(t.def.secrets))
	for _, ref := range t.def.secrets {
		in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(ref.arn)}
		if ref.stage != "" {
			in.VersionStage = aws.String(ref.stage)
		}
		if ref.versionID != "" {
			in.VersionId = aws.String(ref.versionID)
		}
		out, err := client.GetSecretValue(ctx, in)
		if err != nil {
			return nil, reasonSecrets + "failed to fetch secret " + ref.arn + " from secrets manager: " + sdkErrorText(err)
		}
		v, why := secretValue(out, ref.jsonKey)
		if why != "" {
			return nil, reasonSecrets + why
		}
		values[ref.name] = v
	}
	return values, ""
}

// secretValue picks the value ECS puts in the environment: the SecretString, or one of
// its JSON keys (formatted with %v, as the ECS agent does). The reason it gives when it
// cannot never quotes the secret.
func secretValue(out *secretsmanager.GetSecretValueOutput, key string) (string, string) {
	str := aws.ToString(out.SecretString)
	if key == "" {
		return str, ""
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		return "", "retrieved secret from Secrets Manager is not a JSON object, so it has no json key " + key
	}
	v, ok := m[key]
	if !ok {
		return "", "retrieved secret from Secrets Manager did not contain json key " + key
	}
	return fmt.Sprintf("%v", v), ""
}

// pullImage authorises the image pull from an ECR repository (the manifest, then the
// layers) and returns the stopped reason of a refusal.
func (s *Server) pullImage(ctx context.Context, t *task, p *identity.Principal) string {
	img, ok := parseECRImage(t.def.image)
	if !ok {
		return ""
	}
	reqs := iampolicy.ECRPull(iampolicy.Env{Region: img.region, Account: img.account}, img.repository)
	for _, r := range []identity.Request{reqs[3], reqs[1], reqs[2]} {
		err := s.authorizeAs(ctx, p, r)
		if err == nil {
			continue
		}
		s.log.Warn("image pull refused", logging.TaskARN, t.arn, logging.Error, err.Error())
		if r.Action == "ecr:BatchGetImage" {
			return fmt.Sprintf("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref %s: pulling from host %s failed with status code [manifests %s]: 403 Forbidden",
				t.def.image, img.host, img.ref)
		}
		return fmt.Sprintf("CannotPullContainerError: ref pull has been retried 5 time(s): failed to copy: httpReadSeeker: failed open: unexpected status code https://%s/v2/%s/blobs/%s: 403 Forbidden",
			img.host, img.repository, t.imageDigest)
	}
	return ""
}

// logStream is the task's awslogs stream: <prefix>/<container>/<task id>.
func logStream(t *task) string {
	if t.def.logPrefix == "" {
		return t.def.container + "/" + t.id
	}
	return t.def.logPrefix + "/" + t.def.container + "/" + t.id
}

// validateLogger authorises the awslogs driver's writes: a refused CreateLogStream fails
// the task, as on Fargate; a refused PutLogEvents leaves it running with its output
// dropped, as CloudWatch would never receive it.
func (s *Server) validateLogger(ctx context.Context, t *task, p *identity.Principal) (dropOutput bool, failure string) {
	if t.def.logGroup == "" {
		return false, ""
	}
	reqs := iampolicy.LogsWrite(s.iamEnv(), t.def.logGroup, logStream(t))
	if err := s.authorizeAs(ctx, p, reqs[0]); err != nil {
		return false, reasonLogger + refusal(err) + ": exit status 1"
	}
	if err := s.authorizeAs(ctx, p, reqs[1]); err != nil {
		s.log.Warn("awslogs may not put log events: the task's output is dropped", logging.TaskARN, t.arn, logging.Error, err.Error())
		return true, ""
	}
	return false, ""
}

// authorizeAs asks the Authorizer about r for p (allowed without one).
func (s *Server) authorizeAs(ctx context.Context, p *identity.Principal, r identity.Request) error {
	if s.authz == nil {
		return nil
	}
	return iampolicy.AuthorizeAll(ctx, s.authz, p, []identity.Request{r})
}

// refusal words an authorisation error as the service's error in a stopped reason.
func refusal(err error) string {
	var de *identity.DeniedError
	if errors.As(err, &de) || errors.Is(err, identity.ErrUnsupported) {
		return "AccessDeniedException: " + err.Error()
	}
	return err.Error()
}

// sdkErrorText is a service error as code and message, or the error itself.
func sdkErrorText(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}
