package lambdamain_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/logging"
)

type cfg struct {
	Table string
	Level slog.Level
}

func load(env *config.Env) cfg {
	return cfg{Table: env.Required("TABLE_NAME"), Level: env.Level("LOG_LEVEL", slog.LevelInfo)}
}

// fake is a process whose environment, AWS configuration and runtime the test sets.
type fake struct {
	env     map[string]string
	awsErr  error
	out     testkit.Logs
	loads   int
	started []any
}

func (f *fake) process() lambdamain.Process {
	return lambdamain.Process{
		LookupEnv: config.Map(f.env),
		Stdout:    &f.out,
		LoadAWS: func(context.Context) (aws.Config, error) {
			f.loads++
			return aws.Config{Region: "eu-west-1"}, f.awsErr
		},
		Start: func(h any) { f.started = append(f.started, h) },
	}
}

func function(build func(cfg, lambdamain.Deps) (any, error)) lambdamain.Function[cfg] {
	return lambdamain.Function[cfg]{
		Load:     load,
		LogLevel: func(c cfg) slog.Level { return c.Level },
		AWS:      true,
		Build:    build,
	}
}

func handle(context.Context, json.RawMessage) (string, error) { return "ok", nil }

func TestRun_Starts(t *testing.T) {
	f := &fake{env: map[string]string{"TABLE_NAME": "t", "LOG_LEVEL": "DEBUG"}}
	var got lambdamain.Deps
	err := lambdamain.Run(function(func(c cfg, d lambdamain.Deps) (any, error) {
		if c.Table != "t" {
			t.Errorf("config %+v", c)
		}
		got = d
		return handle, nil
	}), f.process())
	if err != nil || len(f.started) != 1 || f.loads != 1 || got.AWS.Region != "eu-west-1" {
		t.Fatalf("Run = %v, started %d, AWS loads %d, deps %+v", err, len(f.started), f.loads, got)
	}
	got.Log.Debug("hello")
	if err := got.Metrics.Count("prod", "Probe"); err != nil {
		t.Fatal(err)
	}
	if lines := f.out.Lines(t); len(lines) != 2 || lines[0][slog.MessageKey] != "hello" || lines[1]["Probe"] != 1.0 {
		t.Fatalf("stdout: %v", lines)
	}
}

// A configuration problem and an AWS failure are reported together, and nothing is
// built or started.
func TestRun_ConfigurationProblem(t *testing.T) {
	f := &fake{env: map[string]string{}, awsErr: errors.New("no credentials")}
	built := false
	err := lambdamain.Run(function(func(cfg, lambdamain.Deps) (any, error) { built = true; return handle, nil }), f.process())
	if err == nil || !strings.Contains(err.Error(), "TABLE_NAME") || !strings.Contains(err.Error(), "no credentials") {
		t.Fatalf("Run = %v", err)
	}
	if built || len(f.started) != 0 {
		t.Fatalf("built %v, started %d", built, len(f.started))
	}
	lines := f.out.Lines(t)
	if len(lines) != 1 || lines[0][slog.LevelKey] != "ERROR" || lines[0][logging.Error] != err.Error() {
		t.Fatalf("log %v", lines)
	}
}

// A handler that cannot be built (a weak secret, say) stops the start-up.
func TestRun_BuildFails(t *testing.T) {
	for name, build := range map[string]func(cfg, lambdamain.Deps) (any, error){
		"error":      func(cfg, lambdamain.Deps) (any, error) { return nil, errors.New("weak secret") },
		"no handler": func(cfg, lambdamain.Deps) (any, error) { return nil, nil },
	} {
		f := &fake{env: map[string]string{"TABLE_NAME": "t"}}
		err := lambdamain.Run(function(build), f.process())
		lines := f.out.Lines(t)
		if err == nil || len(f.started) != 0 || len(lines) != 1 || lines[0][slog.LevelKey] != "ERROR" || lines[0][logging.Error] != err.Error() {
			t.Errorf("%s: Run = %v, started %d, log %v", name, err, len(f.started), lines)
		}
	}
}

// A function that needs no AWS configuration does not load one.
func TestRun_WithoutAWS(t *testing.T) {
	f := &fake{env: map[string]string{"TABLE_NAME": "t"}, awsErr: errors.New("must not be loaded")}
	fn := function(func(_ cfg, d lambdamain.Deps) (any, error) {
		if d.AWS.Region != "" {
			t.Errorf("AWS configuration %+v", d.AWS)
		}
		return handle, nil
	})
	fn.AWS = false
	if err := lambdamain.Run(fn, f.process()); err != nil || f.loads != 0 || len(f.started) != 1 {
		t.Fatalf("Run = %v, AWS loads %d, started %d", err, f.loads, len(f.started))
	}
}
