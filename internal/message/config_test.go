package message_test

import (
	"slices"
	"testing"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/message"
)

func newEnvFrom(m map[string]string) *config.Env { return config.New(config.Map(m)) }

func loadOK(t *testing.T, m map[string]string) message.Config {
	t.Helper()
	env := newEnvFrom(m)
	cfg := message.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The Message function starts no task: it reads none of the variables only starting
// one needs, whatever its environment holds.
func TestLoadConfig_NoLauncherVariables(t *testing.T) {
	launcherOnly := []string{ensure.EnvCluster, ensure.EnvTaskDefinition, ensure.EnvContainer, ensure.EnvSubnets,
		ensure.EnvSecurityGroups, ensure.EnvCapacityProvider, ensure.EnvMaxSandboxes, ensure.EnvLeaseTTL, ensure.EnvBucket}
	m := map[string]string{"TABLE_NAME": "t", "MANAGEMENT_ENDPOINT": "https://x/prod", "CONNECT_FUNCTION": "sandgate-connect"}
	for _, k := range launcherOnly {
		m[k] = "set"
	}
	env := newEnvFrom(m)
	message.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range env.Names() {
		if slices.Contains(launcherOnly, k) {
			t.Errorf("LoadConfig reads %s", k)
		}
	}
}
