package admin

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/cloudformation"

	"github.com/sandgate/sandgate/infra/stackref"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// The variables a sourced .sandgate/aws.env sets (infra/local/stack's AWSEnv) that name
// the local stack's resources.
const (
	EnvTable              = "SANDGATE_TABLE"
	EnvBucket             = "SANDGATE_BUCKET"
	EnvCluster            = "SANDGATE_CLUSTER"
	EnvManagementEndpoint = "SANDGATE_MANAGEMENT_ENDPOINT"
	EnvStoragePathStyle   = "SANDGATE_STORAGE_PATH_STYLE"
	EnvR2AccessKeyID      = "SANDGATE_R2_ACCESS_KEY_ID"
	EnvR2SecretAccessKey  = "SANDGATE_R2_SECRET_ACCESS_KEY"
)

// The deployed stack's outputs and parameters the command reads (template.yaml).
const (
	outTable              = "TableName"
	outCluster            = "ClusterName"
	outManagementEndpoint = "ManagementEndpoint"
	paramBucket           = "BucketName"
	paramStorageRegion    = "StorageRegion"
	paramStoragePathStyle = "StoragePathStyle"
	paramStorageSecret    = "StorageCredentialsSecretArn"
)

// LoadEnvFile sets the variables a `source path` of the local stack's aws.env would
// set (its export lines; its unset line), so the SDK and the command see that stack.
func LoadEnvFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s (does make dev run?): %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "unset "):
			for _, name := range strings.Fields(line)[1:] {
				os.Unsetenv(name)
			}
		case strings.HasPrefix(line, "export "):
			for _, kv := range strings.Fields(line)[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("%s: not NAME=value: %q", path, kv)
				}
				if err := os.Setenv(k, v); err != nil {
					return err
				}
			}
		}
	}
	return sc.Err()
}

// fromEnv is the configuration the SANDGATE_* variables name, ok false without them.
func fromEnv() (cleanup.Config, bool) {
	c := cleanup.Config{
		Table: os.Getenv(EnvTable), Bucket: os.Getenv(EnvBucket), Cluster: os.Getenv(EnvCluster),
		ManagementEndpoint: os.Getenv(EnvManagementEndpoint),
		Storage:            s3bucket.Options{UsePathStyle: os.Getenv(EnvStoragePathStyle) == "true"},
	}
	if id := os.Getenv(EnvR2AccessKeyID); id != "" {
		// The local R2: the bucket answers the parent API token's key only.
		c.Storage.AccessKeyID, c.Storage.SecretAccessKey, c.Storage.Region = id, os.Getenv(EnvR2SecretAccessKey), "auto"
		c.Storage.UsePathStyle = true
	}
	return c, c.Table != ""
}

// fromStack reads a deployed stack's resources from CloudFormation.
func fromStack(ctx context.Context, st *stackref.Stack) (cleanup.Config, error) {
	d, err := stackref.Describe(ctx, cloudformation.NewFromConfig(st.AWS), st.Name)
	if err != nil {
		return cleanup.Config{}, err
	}
	c := cleanup.Config{
		Table: d.Outputs[outTable], Cluster: d.Outputs[outCluster], ManagementEndpoint: d.Outputs[outManagementEndpoint],
		Bucket: d.Parameters[paramBucket], StorageSecret: d.Parameters[paramStorageSecret],
		Storage: s3bucket.Options{Region: d.Parameters[paramStorageRegion], UsePathStyle: d.Parameters[paramStoragePathStyle] == "true"},
	}
	var missing []string
	for name, v := range map[string]string{outTable: c.Table, outCluster: c.Cluster, outManagementEndpoint: c.ManagementEndpoint, paramBucket: c.Bucket} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return c, fmt.Errorf("stack %s (%s) lacks %s: is it sandgate's, and fully created?", st.Name, d.Status, strings.Join(missing, ", "))
	}
	return c, nil
}
