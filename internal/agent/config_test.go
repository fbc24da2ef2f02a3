package agent_test

import (
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/workload"
)

// The variables RunTask overrides and the platform set.
func taskVars() map[string]string {
	return map[string]string{
		taskenv.UserID: "user_abc", taskenv.LeaseToken: "tok", taskenv.Generation: "7",
		taskenv.Table: "table", taskenv.Bucket: "bucket", taskenv.Prefix: "users/user_abc/",
		taskenv.ManagementEndpoint: "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
		agent.EnvMetadataURI:       "http://169.254.170.2/v4/abc",
	}
}

func TestLoadConfig_Defaults(t *testing.T) {
	env := config.New(config.Map(taskVars()))
	cfg := agent.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("data")
	want := agent.Config{
		UserID: "user_abc", LeaseToken: "tok", Generation: 7, Table: "table", Bucket: "bucket",
		Prefix:      "users/user_abc/",
		MetadataURI: "http://169.254.170.2/v4/abc", Port: 8080, SleepAfter: 10 * time.Minute,
		MaxLifetime: 8 * time.Hour, SyncInterval: 30 * time.Second, LeaseTTL: 60 * time.Second,
		StopTimeout: 110 * time.Second, WorkloadGrace: 10 * time.Second, DataDir: abs,
		MessageRate: 20, LogLevel: slog.LevelInfo,
		WorkloadUID: 10001, WorkloadGID: 10001, WorkloadLimits: workload.DefaultLimits,
		WorkloadEnv: []string{"PATH=" + workload.DefaultPath},
	}
	if len(cfg.Command) != 0 {
		t.Errorf("Command = %q, want none (the demo)", cfg.Command)
	}
	cfg.Command = nil
	if cfg.Storage != want.Storage {
		t.Errorf("Storage = %+v", cfg.Storage)
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("LoadConfig =\n%+v\nwant\n%+v", cfg, want)
	}
	if cfg.Heartbeat() != 20*time.Second || cfg.Workspace() != filepath.Join(abs, "workspace") ||
		cfg.StatePath() != filepath.Join(abs, ".sandgate") {
		t.Errorf("derived: %s %s %s", cfg.Heartbeat(), cfg.Workspace(), cfg.StatePath())
	}
	// Every variable read is either set by the task definition, optional, per task, or
	// the platform's; the lists say which.
	for _, name := range env.Names() {
		if !slices.Contains(agent.PerTask, name) && !slices.Contains(agent.Platform, name) &&
			!slices.Contains(agent.Optional, name) && !slices.Contains(taskDefinitionVars, name) {
			t.Errorf("%s is read but in no list", name)
		}
	}
}

// What template.yaml's task definition must set (README for the lead's template edits).
var taskDefinitionVars = []string{"AGENT_PORT", "DATA_DIR", "SLEEP_AFTER", "MAX_LIFETIME", "SYNC_INTERVAL",
	"LEASE_TTL", "MESSAGE_RATE_LIMIT", "LOG_LEVEL", "STORAGE_REGION", "STORAGE_PATH_STYLE", "VEND_URL", "RELAY_URL"}

func TestLoadConfig_Values(t *testing.T) {
	vars := taskVars()
	for k, v := range map[string]string{
		"AGENT_PORT": "9000", "SLEEP_AFTER": "600", "MAX_LIFETIME": "2h", "SYNC_INTERVAL": "5s",
		"LEASE_TTL": "15", "SANDBOX_COMMAND": "  node /app/gateway.js  --flag ", "DATA_DIR": "/home/sandbox/data",
		"MESSAGE_RATE_LIMIT": "50", "LOG_LEVEL": "debug", "STOP_TIMEOUT": "100s", "WORKLOAD_GRACE": "20s",
		"STORAGE_REGION": "auto", "STORAGE_PATH_STYLE": "true",
	} {
		vars[k] = v
	}
	env := config.New(config.Map(vars))
	cfg := agent.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9000 || cfg.SleepAfter != 10*time.Minute || cfg.MaxLifetime != 2*time.Hour ||
		cfg.SyncInterval != 5*time.Second || cfg.LeaseTTL != 15*time.Second || cfg.Heartbeat() != 5*time.Second ||
		!slices.Equal(cfg.Command, []string{"node", "/app/gateway.js", "--flag"}) || cfg.DataDir != "/home/sandbox/data" ||
		cfg.MessageRate != 50 || cfg.LogLevel != slog.LevelDebug || cfg.StopTimeout != 100*time.Second ||
		cfg.WorkloadGrace != 20*time.Second || cfg.Storage.Region != "auto" || !cfg.Storage.UsePathStyle {
		t.Fatalf("LoadConfig = %+v", cfg)
	}
}

// The workload's identity, limits and environment: the pass-through variables that are
// set, and the declared ones that are set, nothing else of the agent's environment.
func TestLoadConfig_Workload(t *testing.T) {
	vars := taskVars()
	for k, v := range map[string]string{
		"WORKLOAD_UID": "2000", "WORKLOAD_GID": "3000", "WORKLOAD_MAX_PROCS": "100", "WORKLOAD_MAX_FILES": "1024",
		"WORKLOAD_MAX_ADDRESS_SPACE_MB": "2048", "WORKLOAD_ENV": " OPENAI_API_KEY, UNSET_ONE,TZ ,, MODEL",
		"OPENAI_API_KEY": "sk-team", "MODEL": "small", "UNDECLARED": "never", "PATH": "/opt/bin:/usr/bin",
		"TZ": "Europe/Paris", "STORAGE_SECRET_ACCESS_KEY": "agent-only", "STORAGE_ACCESS_KEY_ID": "agent-only-id",
	} {
		vars[k] = v
	}
	env := config.New(config.Map(vars))
	cfg := agent.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if cfg.WorkloadUID != 2000 || cfg.WorkloadGID != 3000 ||
		cfg.WorkloadLimits != (workload.Limits{Procs: 100, Files: 1024, AddressSpace: 2048 << 20, Nice: workload.DefaultNice}) {
		t.Errorf("identity %d:%d, limits %+v", cfg.WorkloadUID, cfg.WorkloadGID, cfg.WorkloadLimits)
	}
	want := []string{"PATH=/opt/bin:/usr/bin", "TZ=Europe/Paris", "OPENAI_API_KEY=sk-team", "MODEL=small"}
	if !slices.Equal(cfg.WorkloadEnv, want) {
		t.Errorf("WorkloadEnv = %q, want %q", cfg.WorkloadEnv, want)
	}
}

// The workload never runs as root, and never receives a variable of the agent's own by
// declaration: the lease token, the store's keys, the credentials URI, the metadata
// endpoint. Each refusal names WORKLOAD_ENV and the variable.
func TestLoadConfig_Workload_Refused(t *testing.T) {
	vars := taskVars()
	vars["WORKLOAD_UID"], vars["WORKLOAD_GID"] = "0", "-5"
	declared := []string{taskenv.LeaseToken, "STORAGE_ACCESS_KEY_ID", "STORAGE_SECRET_ACCESS_KEY",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", agent.EnvMetadataURI, "HOME", "PORT", "NOT-A-NAME"}
	vars["WORKLOAD_ENV"] = strings.Join(declared, ",")
	env := config.New(config.Map(vars))
	agent.LoadConfig(env)
	err := env.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range append([]string{"WORKLOAD_UID:", "WORKLOAD_GID:"}, declared...) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

// Every problem is reported at once, each naming its variable.
func TestLoadConfig_BadInput_EveryProblemReported(t *testing.T) {
	vars := map[string]string{
		taskenv.UserID: "bob", taskenv.Generation: "0", taskenv.Prefix: "users/",
		agent.EnvMetadataURI: "::",
		"AGENT_PORT":         "0", "SLEEP_AFTER": "soon", "SYNC_INTERVAL": "100ms", "LEASE_TTL": "1s",
		"STOP_TIMEOUT": "1s", "WORKLOAD_GRACE": "1h", "MESSAGE_RATE_LIMIT": "-1", "LOG_LEVEL": "chatty",
		"STORAGE_ACCESS_KEY_ID": "AKIA", "MAX_LIFETIME": "0",
	}
	env := config.New(config.Map(vars))
	agent.LoadConfig(env)
	err := env.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, name := range []string{taskenv.UserID, taskenv.LeaseToken, taskenv.Generation, taskenv.Table,
		taskenv.Bucket, agent.EnvMetadataURI, "AGENT_PORT", "SLEEP_AFTER",
		"SYNC_INTERVAL", "LEASE_TTL", "STOP_TIMEOUT", "WORKLOAD_GRACE", "MESSAGE_RATE_LIMIT", "LOG_LEVEL",
		"STORAGE_ACCESS_KEY_ID", "MAX_LIFETIME"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

// A prefix that is not the user's own is refused: the agent must never sync one user's
// files under another's prefix.
func TestLoadConfig_PrefixOfAnotherUser_Refused(t *testing.T) {
	vars := taskVars()
	vars[taskenv.Prefix] = "users/user_other/"
	env := config.New(config.Map(vars))
	agent.LoadConfig(env)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), taskenv.Prefix) {
		t.Fatalf("Err = %v", err)
	}
}

// The services' URLs are required, and must be http(s) URLs.
func TestLoadServices(t *testing.T) {
	env := config.New(config.Map(map[string]string{agent.EnvVendURL: "https://v.lambda-url.eu-west-1.on.aws/", agent.EnvRelayURL: "http://127.0.0.1:9/"}))
	s := agent.LoadServices(env)
	if env.Err() != nil || s.VendURL != "https://v.lambda-url.eu-west-1.on.aws/" || s.RelayURL != "http://127.0.0.1:9/" {
		t.Fatalf("%+v %v", s, env.Err())
	}
	env = config.New(config.Map(map[string]string{agent.EnvVendURL: "ftp://x"}))
	agent.LoadServices(env)
	for _, name := range []string{agent.EnvVendURL, agent.EnvRelayURL} {
		if err := env.Err(); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("Err = %v, want one naming %s", err, name)
		}
	}
}

func TestLoadHealthConfig(t *testing.T) {
	env := config.New(config.Map(map[string]string{agent.EnvMetadataURI: "http://169.254.170.2/v4/x"}))
	h := agent.LoadHealthConfig(env)
	if env.Err() != nil || h.Port != 8080 || h.MetadataURI != "http://169.254.170.2/v4/x" {
		t.Fatalf("%+v %v", h, env.Err())
	}
	env = config.New(config.Map(nil))
	agent.LoadHealthConfig(env)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), agent.EnvMetadataURI) {
		t.Fatalf("Err = %v", err)
	}
}
