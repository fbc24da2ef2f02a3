package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/secretslocal"
	"github.com/sandgate/sandgate/infra/local/stslocal"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// OperatorName is the IAM user whose credentials the stack's own clients, tests and
// `.sandgate/aws.env` use: an administrator of the local account, as an operator
// with their own credentials is in AWS.
const OperatorName = "sandgate-operator"

// SigningSecretName is the Secrets Manager secret the template's signing secrets
// resolve from, seeded with the local development secret.
const SigningSecretName = "sandgate/signing-secrets"

// allowAll is the operator's policy.
var allowAll = json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Sid":"Administrator","Effect":"Allow","Action":"*","Resource":"*"}]}`)

// RoleName is the name the local stack gives the template's role logicalID, as
// CloudFormation names a role without a RoleName: after the stack and the logical id.
func RoleName(logicalID string) string {
	name := StackName + "-" + logicalID
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// identities is the stack's IAM side: the account's roles and sessions, the policy
// evaluator, and the STS and Secrets Manager endpoints.
type identities struct {
	authority *identity.Authority
	evaluator *iampolicy.Evaluator
	// authorizer is the evaluator, or nil when enforcement is off (Options.NoIAM).
	authorizer identity.Authorizer
	recorder   *iampolicy.Recorder
	sessions   identity.SessionIssuer
	operator   identity.Credentials
	secrets    *secretslocal.Server
	servers    []*http.Server
}

// startIdentity creates the account (its operator user), starts the evaluator unless
// enforcement is off, and serves STS and Secrets Manager, seeded with the signing
// secret. The template's roles come later (addRoles): reading the template needs the
// secrets its dynamic references name.
func (s *Stack) startIdentity(ctx context.Context, o Options) error {
	id := &identities{authority: identity.New(AccountID, Region), recorder: o.Recorder}
	s.ids = id
	op, _, err := id.authority.AddUser(OperatorName, []identity.Policy{{Name: OperatorName + "/administrator", Document: allowAll}})
	if err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	id.operator = op

	env := iampolicy.Env{Region: Region, Account: AccountID}
	var stsTrust stslocal.Trust
	issuer := identity.ServiceIssuer{Authority: id.authority}
	if o.NoIAM {
		s.log.Warn("IAM enforcement is OFF (debugging only): every signed caller may do anything; nothing here proves a policy")
	} else {
		root, err := repoRoot(o.Template)
		if err != nil {
			return err
		}
		ev, err := iampolicy.Start(ctx, filepath.Join(root, iampolicy.ScriptPath), filepath.Join(root, iampolicy.NodeModulesPath),
			iampolicy.Options{Logger: s.log, Recorder: id.recorder})
		if err != nil {
			return fmt.Errorf("identities: %w", err)
		}
		id.evaluator, id.authorizer = ev, ev
		stsTrust = ev.STSTrust(ctx, env)
		issuer.Trust = func(ctx context.Context, role *identity.Role, service string) error {
			return ev.Trust(ctx, iampolicy.TrustRequest{Role: role, Service: service, SourceAccount: AccountID, Region: Region})
		}
	}
	id.sessions = issuer

	stsURL, err := id.serve(&stslocal.Server{Authority: id.authority, Trust: stsTrust, Log: s.log})
	if err != nil {
		return err
	}
	s.Endpoints["AWS_ENDPOINT_URL_STS"] = stsURL
	id.secrets = secretslocal.New(id.authority, id.authorizer, s.log)
	smURL, err := id.serve(id.secrets)
	if err != nil {
		return err
	}
	s.Endpoints["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = smURL
	if _, err := id.secrets.Put(SigningSecretName, local.DevSecret); err != nil {
		return fmt.Errorf("identities: seed %s: %w", SigningSecretName, err)
	}
	return nil
}

// addRoles registers the template's roles in the account, after checking that the
// evaluator can decide every policy they hold.
func (id *identities) addRoles(tpl *template.Template) error {
	var roles []*identity.Role
	for _, logical := range tpl.RoleIDs() {
		r := tpl.Roles[logical]
		role := identity.Role{Name: RoleName(logical), LogicalID: logical, Trust: r.Trust,
			MaxSession: time.Duration(r.MaxSessionDuration) * time.Second}
		if r.RoleName != "" {
			role.Name = r.RoleName
		}
		for _, p := range r.Policies {
			role.Policies = append(role.Policies, identity.Policy{Name: logical + "/" + p.Name, Document: p.Document})
		}
		added, err := id.authority.AddRole(role)
		if err != nil {
			return fmt.Errorf("identities: %w", err)
		}
		roles = append(roles, added)
	}
	if err := iampolicy.CheckRoles(roles...); err != nil {
		return fmt.Errorf("identities: the template's policies use what the local stack cannot evaluate: %w", err)
	}
	if id.recorder != nil {
		if err := id.recorder.Register(roles...); err != nil {
			return fmt.Errorf("identities: %w", err)
		}
	}
	return nil
}

// serve runs h on a loopback port and returns its URL.
func (id *identities) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("identities: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	id.servers = append(id.servers, srv)
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}

func (id *identities) close() error {
	var errs []error
	for _, srv := range id.servers {
		errs = append(errs, srv.Close())
	}
	if id.evaluator != nil {
		errs = append(errs, id.evaluator.Close())
	}
	return errors.Join(errs...)
}

// repoRoot is the directory of the template, which is the repository's root: the
// evaluator's script and node_modules are found from it.
func repoRoot(templatePath string) (string, error) {
	abs, err := filepath.Abs(templatePath)
	if err != nil {
		return "", fmt.Errorf("find the repository: %w", err)
	}
	return filepath.Dir(abs), nil
}

// operatorConfig is an AWS configuration signed as the operator, with the DynamoDB
// endpoint as its base (other clients set theirs from Endpoints).
func (s *Stack) operatorConfig(ctx context.Context) (aws.Config, error) {
	op := s.ids.operator
	return awsconf.Load(ctx,
		config.WithRegion(Region),
		config.WithBaseEndpoint(s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"]),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(op.AccessKeyID, op.SecretAccessKey, op.SessionToken)),
		// Ignore ~/.aws so a developer's profile cannot redirect or sign the stack's traffic.
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	)
}

// Authority is the local account: its roles, users and sessions.
func (s *Stack) Authority() *identity.Authority { return s.ids.authority }

// Operator returns the operator's credentials (an administrator of the local account).
func (s *Stack) Operator() identity.Credentials { return s.ids.operator }

// Secrets is the stack's Secrets Manager.
func (s *Stack) Secrets() *secretslocal.Server { return s.ids.secrets }

// APIGatewayService is the service principal API Gateway assumes its account's
// CloudWatch role as.
const APIGatewayService = "apigateway.amazonaws.com"

// applyAccounts does what API Gateway does when an AWS::ApiGateway::Account names a
// CloudWatch role: it assumes the role to check it may, and refuses the account
// setting when it may not.
func (s *Stack) applyAccounts(ctx context.Context, doc *template.Document) error {
	accounts, err := doc.OfType("AWS::ApiGateway::Account")
	if err != nil {
		return err
	}
	for _, r := range accounts {
		v, err := doc.Eval(template.Lookup(r.Properties, "CloudWatchRoleArn"), "Resources."+r.LogicalID+".Properties.CloudWatchRoleArn")
		if err != nil {
			return err
		}
		arn, _ := v.(string)
		if arn == "" {
			continue
		}
		if _, _, err := s.ids.sessions.IssueForService(ctx, APIGatewayService, arn, "apigateway-cloudwatch-logs", 0); err != nil {
			return fmt.Errorf("%s: the role ARN does not have required permissions set to API Gateway: %w", r.LogicalID, err)
		}
	}
	return nil
}
