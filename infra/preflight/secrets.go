package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/sandgate/sandgate/internal/auth"
)

// checkSigningSecret reads the signing secret the functions read at run time (its
// current version, by the name the template gives them) and checks its shape with the
// verifier's own parser. The value is never reported, only how many secrets it holds.
func (c *Checker) checkSigningSecret(ctx context.Context) Result {
	name, skip := c.need(ParamSigningSecretName)
	if skip != nil {
		return *skip
	}
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)}
	what := name
	const create = `umask 077; openssl rand -base64 48 | tr -d '\n' > /tmp/signing; aws secretsmanager create-secret --name %s --secret-string file:///tmp/signing (keep the value for your backend's signer, then rm /tmp/signing)`
	out, err := c.Secrets.GetSecretValue(ctx, in)
	var missing *smtypes.ResourceNotFoundException
	var decrypt *smtypes.DecryptionFailure
	switch {
	case errors.As(err, &missing):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("no secret %s in %s: the authorize, status and prewarm functions would not start", name, c.Stack.Region),
			Fix:     fmt.Sprintf(create, name)}
	case errors.As(err, &decrypt):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("%s cannot be decrypted with these credentials (%s)", what, oneLine(apiMessage(err))),
			Fix:     "grant kms:Decrypt on the secret's KMS key to the credentials you deploy with"}
	case err != nil:
		return failed(CheckSigningSecret, "secretsmanager:GetSecretValue", err)
	}
	if out.SecretString == nil {
		return Result{Status: Fail,
			Summary: what + " holds a binary value; the functions read its SecretString",
			Fix:     "aws secretsmanager put-secret-value --secret-id " + name + " --secret-string file:///tmp/signing (comma-separated secrets, each at least 32 bytes)"}
	}
	value := aws.ToString(out.SecretString)
	secrets, err := auth.ParseSecrets(value)
	if err != nil {
		// ParseSecrets names the position of a weak secret, never the secret.
		return Result{Status: Fail,
			Summary: fmt.Sprintf("%s is not a list of signing secrets: %v (each must be at least %d bytes)", what, err, auth.MinSecretBytes),
			Fix:     fmt.Sprintf(`umask 077; openssl rand -base64 48 | tr -d '\n' > /tmp/signing; aws secretsmanager put-secret-value --secret-id %s --secret-string file:///tmp/signing`, name)}
	}
	return Result{Status: OK,
		Summary: fmt.Sprintf("%s: %d secret(s) of at least %d bytes (the first signs); version %s", name, len(secrets), auth.MinSecretBytes, aws.ToString(out.VersionId))}
}

// checkStorageCredentials checks the R2 (or other S3-compatible store) keys secret:
// JSON with accessKeyId and secretAccessKey. Skipped for AWS S3.
func (c *Checker) checkStorageCredentials(ctx context.Context) Result {
	// The parameter defaults to "", so no value means the template does not declare it.
	arn, declared := c.Stack.Value(ParamStorageCredentials)
	endpoint, _ := c.Stack.Value(ParamStorageEndpoint)
	switch {
	case !declared:
		return Result{Status: Skip, Summary: "the template takes no StorageCredentialsSecretArn"}
	case arn == "" && endpoint != "":
		return Result{Status: Fail,
			Summary: "StorageEndpoint is set but StorageCredentialsSecretArn is empty: the template's rule S3CompatibleStoreNeedsCredentials refuses the deploy",
			Fix:     "store the R2 keys in Secrets Manager (docs/DEPLOY.md, Cloudflare R2) and set StorageCredentialsSecretArn to the secret's full ARN"}
	case arn == "":
		return Result{Status: Skip, Summary: "StorageCredentialsSecretArn is empty: AWS S3, reached with the stack's roles"}
	}
	out, err := c.Secrets.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	var missing *smtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &missing):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("no secret %s", arn),
			Fix:     "create it (docs/DEPLOY.md, Cloudflare R2) and pass its full ARN, with the 6-character suffix, as StorageCredentialsSecretArn"}
	case err != nil:
		return failed(CheckStorageCredentials, "secretsmanager:GetSecretValue", err)
	}
	var keys struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if out.SecretString == nil || json.Unmarshal([]byte(aws.ToString(out.SecretString)), &keys) != nil || keys.AccessKeyID == "" || keys.SecretAccessKey == "" {
		return Result{Status: Fail,
			Summary: arn + " is not JSON with non-empty accessKeyId and secretAccessKey",
			Fix:     `aws secretsmanager put-secret-value --secret-id ` + arn + ` --secret-string file:///tmp/r2.json (with {"accessKeyId":"…","secretAccessKey":"…"})`}
	}
	if aws.ToString(out.ARN) != "" && aws.ToString(out.ARN) != arn {
		return Result{Status: Fail,
			Summary: fmt.Sprintf("%s is not the secret's full ARN (%s): the task execution role is granted exactly the parameter's value", arn, aws.ToString(out.ARN)),
			Fix:     "set StorageCredentialsSecretArn=" + aws.ToString(out.ARN)}
	}
	return Result{Status: OK, Summary: arn + ": accessKeyId and secretAccessKey present"}
}
