package message_test

import (
	"testing"

	"github.com/sandgate/sandgate/internal/config"
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
