package e2e_test

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stacktest"
)

func TestMain(m *testing.M) { os.Exit(stacktest.Main(m)) }

const (
	coldStart = 60 * time.Second // generous: CI machines are small and shared
	reply     = 20 * time.Second
)

func quietLog() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }
