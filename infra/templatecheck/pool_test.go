package templatecheck_test

import (
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
)

// The warm pool costs nothing unless asked for: PoolSize defaults to 0, and then the
// refill's schedule is off. With a pool, the schedule runs every minute, and every
// function that starts sandboxes, and the refill, reads the same size and age from
// the parameters; the starts ask the refill by its fixed name.
func TestPool_OffByDefaultAndOneSizeEverywhere(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	p := raw.Parameters["PoolSize"]
	if p == nil || p.Value != "0" || declared(p, "MinValue") != "0" {
		t.Fatalf("PoolSize parameter %+v: want Default 0, MinValue 0", p)
	}
	maxAge := raw.value(t, "PoolMaxAge")
	for size, enabled := range map[string]bool{"0": false, "20": true} {
		tpl, _ := loadModel(t, scenario{name: "pool " + size, params: with(required, map[string]string{"PoolSize": size})})
		fn := tpl.Functions["PoolFunction"]
		if fn == nil || len(fn.Events) != 1 || fn.Events[0].Type != template.EventScheduleV2 ||
			fn.Events[0].Schedule != "rate(1 minute)" || fn.Events[0].Enabled != enabled {
			t.Fatalf("PoolSize %s: PoolFunction's events %+v, want its schedule enabled = %v", size, fn.Events, enabled)
		}
		for _, id := range []string{"ConnectFunction", "PrewarmFunction", "PoolFunction"} {
			env := tpl.Functions[id].Environment
			if env["POOL_SIZE"] != size || env["POOL_MAX_AGE"] != maxAge {
				t.Errorf("PoolSize %s: %s has POOL_SIZE %q, POOL_MAX_AGE %q", size, id, env["POOL_SIZE"], env["POOL_MAX_AGE"])
			}
			if id != "PoolFunction" && env["POOL_FUNCTION"] != tpl.Functions["PoolFunction"].FunctionName {
				t.Errorf("%s asks %q for refills; the pool function is %q", id, env["POOL_FUNCTION"], tpl.Functions["PoolFunction"].FunctionName)
			}
		}
	}
}

// declared is what parameter p's declaration says of key ("" when nothing).
func declared(p *template.Parameter, key string) string {
	if n := template.Lookup(p.Node, key); n != nil {
		return n.Value
	}
	return ""
}
