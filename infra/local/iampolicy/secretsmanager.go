package iampolicy

import (
	"encoding/json"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// SecretsManagerTargetPrefix starts every Secrets Manager X-Amz-Target (JSON 1.1).
const SecretsManagerTargetPrefix = "secretsmanager."

// SecretResolver resolves a SecretId (a name or an ARN) to the secret's ARN; false
// for a secret that does not exist.
type SecretResolver func(secretID string) (arn string, ok bool)

// SecretsManager derives what a Secrets Manager call asks
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html):
// the action on the secret's ARN with secretsmanager:SecretId (the SecretId as the
// request sends it), and for GetSecretValue secretsmanager:VersionStage and
// secretsmanager:VersionId when set; CreateSecret is asked on
// arn:…:secret:<name>-?????? with secretsmanager:Name; ListSecrets on "*". A secret
// that does not exist is asked about by the same name-?????? ARN, so a caller learns
// nothing of secrets it may not read.
func SecretsManager(env Env, c Call, resolve SecretResolver) ([]identity.Request, error) {
	target := c.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, SecretsManagerTargetPrefix)
	if !ok {
		return nil, malformed("X-Amz-Target %q is not Secrets Manager's", target)
	}
	var in struct {
		SecretID     string `json:"SecretId"`
		Name         string
		VersionStage string
		VersionID    string `json:"VersionId"`
	}
	if len(c.Body) > 0 {
		if err := json.Unmarshal(c.Body, &in); err != nil {
			return nil, malformed("%s: body is not JSON: %v", op, err)
		}
	}
	switch op {
	case "ListSecrets":
		return []identity.Request{env.request(c.TLS, "secretsmanager:ListSecrets", "*", nil)}, nil
	case "CreateSecret":
		if in.Name == "" {
			return nil, malformed("CreateSecret without Name")
		}
		return []identity.Request{env.request(c.TLS, "secretsmanager:CreateSecret", unknownSecretARN(env, in.Name),
			map[string][]string{"secretsmanager:Name": {in.Name}})}, nil
	case "GetSecretValue", "PutSecretValue", "DescribeSecret", "UpdateSecretVersionStage", "DeleteSecret", "RotateSecret":
		if in.SecretID == "" {
			return nil, malformed("%s without SecretId", op)
		}
		arn, ok := "", false
		if resolve != nil {
			arn, ok = resolve(in.SecretID)
		}
		if !ok {
			arn = unknownSecretARN(env, in.SecretID)
		}
		ctx := map[string][]string{"secretsmanager:SecretId": {in.SecretID}}
		if op == "GetSecretValue" {
			if in.VersionStage != "" {
				ctx["secretsmanager:VersionStage"] = []string{in.VersionStage}
			}
			if in.VersionID != "" {
				ctx["secretsmanager:VersionId"] = []string{in.VersionID}
			}
		}
		return []identity.Request{env.request(c.TLS, "secretsmanager:"+op, arn, ctx)}, nil
	}
	return nil, unsupported("secretsmanager:"+op, "*", "the local stack does not derive Secrets Manager %s", op)
}

// SecretValue is secretsmanager:GetSecretValue on a secret's ARN, as ECS asks it with
// a task's execution role for the task definition's Secrets (versionStage may be
// empty: AWSCURRENT is read, and the key is left out as in a request without it).
func SecretValue(env Env, tls bool, secretARN, versionStage string) identity.Request {
	ctx := map[string][]string{"secretsmanager:SecretId": {secretARN}}
	if versionStage != "" {
		ctx["secretsmanager:VersionStage"] = []string{versionStage}
	}
	return env.request(tls, "secretsmanager:GetSecretValue", secretARN, ctx)
}

func unknownSecretARN(env Env, id string) string {
	if strings.HasPrefix(id, "arn:") {
		return id
	}
	return env.arn("secretsmanager", env.Region, env.Account, "secret:"+id+"-??????")
}
