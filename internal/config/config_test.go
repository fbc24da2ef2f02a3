package config_test

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/config"
)

func TestEnv_Typed(t *testing.T) {
	e := config.New(config.Map(map[string]string{
		"S": " text ", "N": "42", "D1": "90s", "D2": "600", "B": "true", "L": "a, b,,c", "LV": "warn",
	}))
	if got := e.String("S", "def"); got != "text" {
		t.Errorf("String = %q", got)
	}
	if got := e.String("UNSET", "def"); got != "def" {
		t.Errorf("String default = %q", got)
	}
	if got := e.Int("N", 1, 0, 100); got != 42 {
		t.Errorf("Int = %d", got)
	}
	if got := e.Duration("D1", time.Second); got != 90*time.Second {
		t.Errorf("Duration = %v", got)
	}
	if got := e.Duration("D2", time.Second); got != 10*time.Minute {
		t.Errorf("Duration seconds = %v", got)
	}
	if got := e.Bool("B", false); !got {
		t.Errorf("Bool = %v", got)
	}
	if got := e.List("L"); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("List = %q", got)
	}
	if got := e.Level("LV", slog.LevelInfo); got != slog.LevelWarn {
		t.Errorf("Level = %v", got)
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	if got := e.Names(); !reflect.DeepEqual(got, []string{"S", "UNSET", "N", "D1", "D2", "B", "L", "LV"}) {
		t.Errorf("Names = %q", got)
	}
}

func TestEnv_Err_ReportsEveryProblem(t *testing.T) {
	e := config.New(config.Map(map[string]string{"N": "4x", "D": "-5s", "B": "maybe", "EMPTY": "  "}))
	e.Int("N", 1, 0, 10)
	e.Duration("D", time.Second)
	e.Bool("B", false)
	e.Required("EMPTY")
	e.Required("MISSING")
	err := e.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, name := range []string{"N:", "D:", "B:", "EMPTY:", "MISSING:"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error lacks %s: %v", name, err)
		}
	}
}
