package templatecheck_test

import (
	"strconv"
	"strings"
	"testing"
)

// Every function has a reserved-concurrency parameter of its own, off by default (AWS
// keeps 100 of an account's concurrency unreserved, and new accounts start lower, so
// the template reserves nothing unless asked): the default deploys no
// ReservedConcurrentExecutions, and a value given is the function's reservation.
func TestFunctions_ReservedConcurrencyParameters(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	params := map[string]string{}
	for k, v := range scenarios[0].params {
		params[k] = v
	}
	for i, id := range allFunctions {
		name := strings.TrimSuffix(id, "Function") + "ReservedConcurrency"
		if got := raw.value(t, name); got != "0" {
			t.Errorf("%s defaults to %q, want 0 (none)", name, got)
		}
		params[name] = strconv.Itoa(10 + i)
	}
	tpl, _ := loadModel(t, scenarios[0])
	for _, id := range allFunctions {
		if n := tpl.Functions[id].ReservedConcurrency; n != 0 {
			t.Errorf("%s reserves %d by default", id, n)
		}
	}
	reserved, _ := loadModel(t, scenario{name: "reserved", params: params})
	for i, id := range allFunctions {
		if n := reserved.Functions[id].ReservedConcurrency; n != 10+i {
			t.Errorf("%s reserves %d with its parameter %d", id, n, 10+i)
		}
	}
	if len(reserved.Functions) != len(allFunctions) {
		t.Errorf("the template has %d functions, allFunctions lists %d: give the new one its parameter", len(reserved.Functions), len(allFunctions))
	}
}
