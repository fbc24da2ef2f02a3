package stack

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/logging"
)

// startSchedules invokes each scheduled function on its rate, with the fixed input the
// template's schedules deliver ({}). cron() expressions are not run locally: `make
// invoke` runs such a function on demand.
func (s *Stack) startSchedules(tpl *template.Template) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	for _, f := range tpl.Functions {
		for _, ev := range f.Events {
			if ev.Schedule == "" || !ev.Enabled {
				continue
			}
			every, ok := parseRate(ev.Schedule)
			if !ok {
				s.log.Warn("schedule not run locally", "function", f.LogicalID, "schedule", ev.Schedule)
				continue
			}
			s.sched.Add(1)
			go func(name string) {
				defer s.sched.Done()
				t := time.NewTicker(every)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						if _, err := s.Runtime.Invoke(ctx, name, []byte("{}")); err != nil && ctx.Err() == nil {
							s.log.Error("scheduled invocation failed", "function", name, logging.Error, err.Error())
						}
					}
				}
			}(FunctionName(f))
		}
	}
}

// parseRate reads rate(<n> <unit>) with units minute(s), hour(s), day(s).
func parseRate(expr string) (time.Duration, bool) {
	inner, ok := strings.CutPrefix(expr, "rate(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return 0, false
	}
	fields := strings.Fields(strings.TrimSuffix(inner, ")"))
	if len(fields) != 2 {
		return 0, false
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n <= 0 {
		return 0, false
	}
	unit := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[strings.TrimSuffix(fields[1], "s")]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
