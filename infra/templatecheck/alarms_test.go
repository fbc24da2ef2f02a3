package templatecheck_test

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/metrics"
)

// maxAlarmMetrics is the most metrics an alarm on a math expression may read
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html,
// "Alarms on Math Expressions").
const maxAlarmMetrics = 10

// nearTimeout is the share of a function's Timeout at which FunctionsNearTimeoutAlarm
// counts it, in thousandths (800: 80%).
const nearTimeout = 800

// publishedDimensions are the dimension names each namespace publishes the watched
// metrics under. CloudWatch matches a metric by its exact set of dimensions, so an
// alarm naming one more or one fewer watches a series that never receives data.
// AWS/Lambda: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html;
// AWS/ApiGateway for WebSocket and HTTP APIs:
// https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-logging.html,
// https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html;
// Sandgate: internal/metrics (DimensionStage).
var publishedDimensions = map[string][]string{
	"AWS/Lambda":      {"FunctionName"},
	"AWS/ApiGateway":  {"ApiId", "Stage"},
	metrics.Namespace: {metrics.DimensionStage},
}

// alarmMetric is one metric an alarm reads.
type alarmMetric struct {
	// id is its Id in the alarm's Metrics ("" for a single-metric alarm).
	id                    string
	namespace, name, stat string
	period                string
	dims                  map[string]string
	dimNames              []string
	function              string // the FunctionName dimension's function, by logical id
}

// alarm is one AWS::CloudWatch::Alarm, rendered.
type alarm struct {
	id      string
	props   map[string]any
	metrics []alarmMetric
	// expr is the expression the alarm evaluates ("" for a single-metric alarm).
	expr string
}

func (a *alarm) prop(name string) string {
	s, _ := a.props[name].(string)
	return s
}

func (a *alarm) metric(id string) *alarmMetric {
	for i := range a.metrics {
		if a.metrics[i].id == id {
			return &a.metrics[i]
		}
	}
	return nil
}

// alarms returns the template's alarms by logical id, failing the test on an alarm it
// cannot read.
func alarms(t *testing.T, raw rawTemplate) map[string]*alarm {
	t.Helper()
	out := map[string]*alarm{}
	for _, r := range raw.ofType(t, "AWS::CloudWatch::Alarm") {
		a := &alarm{id: r.LogicalID, props: raw.render(t, r.Properties).(map[string]any)}
		read := func(id string, m map[string]any, stat, period string) {
			am := alarmMetric{id: id, stat: stat, period: period, dims: map[string]string{}}
			am.namespace, _ = m["Namespace"].(string)
			am.name, _ = m["MetricName"].(string)
			for _, d := range list(m["Dimensions"]) {
				dm := d.(map[string]any)
				name, value := fmt.Sprint(dm["Name"]), fmt.Sprint(dm["Value"])
				am.dims[name] = value
				am.dimNames = append(am.dimNames, name)
				if name == "FunctionName" {
					am.function = strings.TrimSuffix(strings.TrimPrefix(value, "${"), "}")
				}
			}
			sort.Strings(am.dimNames)
			a.metrics = append(a.metrics, am)
		}
		if a.props["MetricName"] != nil {
			read("", a.props, a.prop("Statistic"), a.prop("Period"))
		}
		returned := 0
		for _, e := range list(a.props["Metrics"]) {
			m := e.(map[string]any)
			id := fmt.Sprint(m["Id"])
			if ms, ok := m["MetricStat"].(map[string]any); ok {
				if m["ReturnData"] != "false" {
					t.Errorf("%s: metric %s is returned; only the expression should be", a.id, id)
				}
				read(id, ms["Metric"].(map[string]any), fmt.Sprint(ms["Stat"]), fmt.Sprint(ms["Period"]))
				continue
			}
			if m["ReturnData"] == "true" {
				returned++
				a.expr = fmt.Sprint(m["Expression"])
			}
		}
		if a.props["Metrics"] != nil && returned != 1 {
			t.Errorf("%s: %d returned expressions, want 1 (an alarm watches one time series)", a.id, returned)
		}
		out[a.id] = a
	}
	return out
}

// Alarms watch the platform's metrics (live sandboxes, start failures, capacity
// refusals), every function's errors, throttles and duration, and both APIs' errors,
// and notify the alarm topic with a description of what the notice means.
func TestAlarms(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	all := alarms(t, raw)
	watching := map[string][]*alarm{} // "Namespace/MetricName" → the alarms reading it
	for _, a := range all {
		if canonical(a.props["AlarmActions"]) != `["${AlarmTopic}"]` {
			t.Errorf("%s: alarm actions %v, want the alarm topic", a.id, a.props["AlarmActions"])
		}
		if a.props["AlarmDescription"] == nil {
			t.Errorf("%s: no description: whoever is paged needs to know what it means", a.id)
		}
		for _, m := range a.metrics {
			watching[m.namespace+"/"+m.name] = append(watching[m.namespace+"/"+m.name], a)
		}
	}
	for _, m := range []string{metrics.LiveSandboxes, metrics.StartFailures, metrics.CapacityRefusals, metrics.CapacityCorrections} {
		if len(watching[metrics.Namespace+"/"+m]) == 0 {
			t.Errorf("no alarm on %s/%s", metrics.Namespace, m)
		}
	}
	// "Near MaxSandboxes" is a share of the parameter, not a fixed count.
	if !strings.Contains(canonical(all["LiveSandboxesAlarm"].props), "${MaxSandboxes}") {
		t.Error("LiveSandboxesAlarm does not relate live sandboxes to MaxSandboxes")
	}
}

// Every metric an alarm reads is addressed as its service publishes it: the exact
// dimension names, the stage the functions run in, the API it is about.
func TestAlarms_DimensionsAsPublished(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	tpl, _ := loadModel(t, scenarios[0])
	for _, a := range alarms(t, raw) {
		for _, m := range a.metrics {
			want, ok := publishedDimensions[m.namespace]
			if !ok {
				t.Errorf("%s: namespace %q: add its published dimensions to this test", a.id, m.namespace)
				continue
			}
			if !slices.Equal(m.dimNames, want) {
				t.Errorf("%s: %s/%s with dimensions %v; %s publishes it with %v", a.id, m.namespace, m.name, m.dimNames, m.namespace, want)
			}
			if s, ok := m.dims["Stage"]; ok && s != "${StageName}" {
				t.Errorf("%s: %s/%s in stage %q, want ${StageName}", a.id, m.namespace, m.name, s)
			}
			if m.namespace == "AWS/Lambda" && tpl.Functions[m.function] == nil {
				t.Errorf("%s: %s of %q, which is no function of the template", a.id, m.name, m.dims["FunctionName"])
			}
			if api, ok := m.dims["ApiId"]; ok && api != "${WebSocketApi}" && api != "${HttpApi}" {
				t.Errorf("%s: %s of API %q, want ${WebSocketApi} or ${HttpApi}", a.id, m.name, api)
			}
		}
	}
}

// fillRef is a metric's only allowed use in an expression: filled with 0.
var fillRef = regexp.MustCompile(`FILL\(([a-z][A-Za-z0-9_]*), 0\)`)

// An alarm that combines metrics fills every series with 0 first: Lambda and API
// Gateway publish a datapoint only for a period with traffic, and a gap must count as
// none rather than leave the combination without a value. Such an alarm is "1 out of
// N" with N > 1, as AWS advises for FILL in alarms (the newest period is filled while
// its datapoints are still arriving), reads at most 10 metrics, all over one period.
func TestAlarms_ExpressionsFillEverySeries(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	for _, a := range alarms(t, raw) {
		if len(a.metrics) < 2 {
			continue // one series, scaled at most (LiveSandboxesAlarm): nothing to combine
		}
		if len(a.metrics) > maxAlarmMetrics {
			t.Errorf("%s reads %d metrics; an alarm on a math expression may read %d", a.id, len(a.metrics), maxAlarmMetrics)
		}
		filled := map[string]int{}
		for _, m := range fillRef.FindAllStringSubmatch(a.expr, -1) {
			filled[m[1]]++
		}
		bare := fillRef.ReplaceAllString(a.expr, "")
		for _, m := range a.metrics {
			if filled[m.id] == 0 {
				t.Errorf("%s: metric %s is not in the expression as FILL(%s, 0): %s", a.id, m.id, m.id, a.expr)
			}
			if regexp.MustCompile(`\b` + regexp.QuoteMeta(m.id) + `\b`).MatchString(bare) {
				t.Errorf("%s: metric %s appears unfilled in %s", a.id, m.id, a.expr)
			}
			if m.period != a.metrics[0].period {
				t.Errorf("%s: metric %s's period %s differs from %s's %s", a.id, m.id, m.period, a.metrics[0].id, a.metrics[0].period)
			}
		}
		for id := range filled {
			if a.metric(id) == nil {
				t.Errorf("%s: the expression fills %s, which the alarm does not read", a.id, id)
			}
		}
		n, _ := strconv.Atoi(a.prop("EvaluationPeriods"))
		m, _ := strconv.Atoi(a.prop("DatapointsToAlarm"))
		if m != 1 || n < 2 {
			t.Errorf("%s: %s of %s datapoints; an alarm on filled series needs 1 out of N > 1", a.id, a.prop("DatapointsToAlarm"), a.prop("EvaluationPeriods"))
		}
	}
}

// lambdaAlarm checks that the alarms of family id (id, id2, id3…: one alarm reads at
// most maxAlarmMetrics metrics, so more functions than that take a second alarm) read
// metric name with stat for exactly the template's functions, each function once, and
// returns the metric ids by function, and the alarm that reads each.
func lambdaAlarm(t *testing.T, all map[string]*alarm, id, name, stat string, functions []string) (map[string]string, map[string]*alarm) {
	t.Helper()
	ids := family(all, id)
	if len(ids) == 0 {
		t.Fatalf("no %s", id)
	}
	byFunction, alarmOf := map[string]string{}, map[string]*alarm{}
	for _, aid := range ids {
		a := all[aid]
		for _, m := range a.metrics {
			if m.namespace != "AWS/Lambda" || m.name != name || m.stat != stat {
				t.Errorf("%s: metric %s is %s/%s %s, want AWS/Lambda/%s %s", aid, m.id, m.namespace, m.name, m.stat, name, stat)
				continue
			}
			if prev, dup := byFunction[m.function]; dup {
				t.Errorf("%s: %s counted twice (%s, %s)", aid, m.function, prev, m.id)
			}
			byFunction[m.function], alarmOf[m.function] = m.id, a
		}
	}
	got := set()
	for fn := range byFunction {
		got[fn] = true
	}
	if missing, extra := diff(set(functions...), got); len(missing)+len(extra) > 0 {
		t.Errorf("%s: %s of functions: missing %v, not in the template %v", id, name, missing, extra)
	}
	return byFunction, alarmOf
}

// family returns id and the alarms that continue it (id2, id3…), in order.
func family(all map[string]*alarm, id string) []string {
	var ids []string
	if all[id] != nil {
		ids = append(ids, id)
	}
	for n := 2; all[id+strconv.Itoa(n)] != nil; n++ {
		ids = append(ids, id+strconv.Itoa(n))
	}
	return ids
}

// sumOf is the expression that adds terms in order.
func sumOf(terms []string) string { return strings.Join(terms, " + ") }

// FunctionErrorsAlarm and FunctionThrottlesAlarm add every function's Errors and
// Throttles, each filled: the sum has a value when any function reported, whichever
// did not run.
func TestAlarms_FunctionErrorsAndThrottles_EveryFunctionFilled(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	tpl, _ := loadModel(t, scenarios[0])
	functions := slices.Sorted(func(yield func(string) bool) {
		for id := range tpl.Functions {
			if !yield(id) {
				return
			}
		}
	})
	all := alarms(t, raw)
	for id, name := range map[string]string{"FunctionErrorsAlarm": "Errors", "FunctionThrottlesAlarm": "Throttles"} {
		lambdaAlarm(t, all, id, name, "Sum", functions)
		for _, aid := range family(all, id) {
			var terms []string
			for _, m := range all[aid].metrics {
				terms = append(terms, "FILL("+m.id+", 0)")
			}
			if all[aid].expr != sumOf(terms) {
				t.Errorf("%s: expression %q, want the sum of its functions' filled %s: %q", aid, all[aid].expr, name, sumOf(terms))
			}
		}
	}
}

// nearTerm is one function's term in FunctionsNearTimeoutAlarm: 1 when its longest run
// in the period reached the threshold, in milliseconds.
var nearTerm = regexp.MustCompile(`^\(FILL\(([a-z][A-Za-z0-9_]*), 0\) >= ([0-9]+)\)$`)

// FunctionsNearTimeoutAlarm counts the functions whose longest run in a period
// (Duration, Maximum) reached 80% of their own Timeout, read from the template's
// functions here, so a changed Timeout without its threshold fails.
func TestAlarms_NearTimeout_ThresholdsFromTheTimeouts(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	tpl, _ := loadModel(t, scenarios[0])
	var functions []string
	for id := range tpl.Functions {
		functions = append(functions, id)
	}
	all := alarms(t, raw)
	const family = "FunctionsNearTimeoutAlarm"
	byFunction, alarmOf := lambdaAlarm(t, all, family, "Duration", "Maximum", functions)
	seen := set()
	for _, a := range alarmOf {
		if seen[a.id] {
			continue
		}
		seen[a.id] = true
		nearTimeoutTerms(t, a, tpl, seen)
	}
	for fn, metricID := range byFunction {
		if !seen[alarmOf[fn].id+"/"+metricID] {
			t.Errorf("%s: %s's Duration (%s) is read but not compared", alarmOf[fn].id, fn, metricID)
		}
	}
}

// nearTimeoutTerms checks each term of near-timeout alarm a and marks the metrics it
// compares in seen ("<alarm>/<metric>").
func nearTimeoutTerms(t *testing.T, a *alarm, tpl *template.Template, seen map[string]bool) {
	t.Helper()
	id := a.id
	for term := range strings.SplitSeq(a.expr, " + ") {
		m := nearTerm.FindStringSubmatch(term)
		if m == nil {
			t.Errorf("%s: term %q is not (FILL(<metric>, 0) >= <milliseconds>)", id, term)
			continue
		}
		metric := a.metric(m[1])
		if metric == nil {
			t.Errorf("%s: term %q names no metric of the alarm", id, term)
			continue
		}
		seen[id+"/"+m[1]] = true
		fn := tpl.Functions[metric.function]
		if fn == nil {
			continue // reported by lambdaAlarm
		}
		want := fn.Timeout.Milliseconds() * nearTimeout / 1000
		if got, _ := strconv.ParseInt(m[2], 10, 64); got != want {
			t.Errorf("%s: %s at %s ms; its Timeout is %s, so 80%% is %d ms", id, metric.function, m[2], fn.Timeout, want)
		}
	}
	if a.prop("ComparisonOperator") != "GreaterThanOrEqualToThreshold" || a.prop("Threshold") != "1" {
		t.Errorf("%s: %s %s, want GreaterThanOrEqualToThreshold 1 (any function near its timeout)", id, a.prop("ComparisonOperator"), a.prop("Threshold"))
	}
}

// Both APIs' integration errors are watched: the WebSocket API's ExecutionError and
// IntegrationError (less the Connect function's deliberate refusals, which it counts
// itself), and the HTTP API's 5xx.
func TestAlarms_APIErrors(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	all := alarms(t, raw)
	want := map[string]string{ // metric → API
		"ExecutionError": "${WebSocketApi}", "IntegrationError": "${WebSocketApi}", "5xx": "${HttpApi}",
	}
	found := map[string][]string{}
	for _, a := range all {
		for _, m := range a.metrics {
			if m.namespace != "AWS/ApiGateway" {
				continue
			}
			if api, ok := want[m.name]; !ok || m.dims["ApiId"] != api {
				t.Errorf("%s: %s of %s; the APIs publish %v", a.id, m.name, m.dims["ApiId"], want)
				continue
			}
			if m.stat != "Sum" {
				t.Errorf("%s: %s's %s, want Sum (a count of errors)", a.id, m.name, m.stat)
			}
			found[m.name] = append(found[m.name], a.id)
		}
	}
	for name := range want {
		if len(found[name]) == 0 {
			t.Errorf("no alarm on AWS/ApiGateway %s", name)
		}
	}
	// The refusals Connect means, subtracted from the WebSocket API's errors, are the
	// ones it counts.
	ws := all["WebSocketErrorsAlarm"]
	if ws == nil {
		t.Fatal("no WebSocketErrorsAlarm")
	}
	limited := ""
	for _, m := range ws.metrics {
		if m.namespace == metrics.Namespace {
			limited = m.id
			if m.name != metrics.ConnectsLimited || m.stat != "Sum" {
				t.Errorf("WebSocketErrorsAlarm subtracts %s %s, want the Sum of ConnectsLimited", m.name, m.stat)
			}
		}
	}
	if limited == "" || !strings.HasSuffix(ws.expr, " - FILL("+limited+", 0)") {
		t.Errorf("WebSocketErrorsAlarm: %q does not subtract Connect's deliberate refusals", ws.expr)
	}
}

// No alarm treats missing data as breaching: a fresh stack has no data yet, and would
// page before anything ran. An alarm whose failure is silence (CleanupStalledAlarm)
// treats it as missing and notifies INSUFFICIENT_DATA instead.
func TestAlarms_FreshStackDoesNotPage(t *testing.T) {
	raw := loadRaw(t, templatePath, scenarios[0])
	all := alarms(t, raw)
	for _, a := range all {
		switch tm := a.prop("TreatMissingData"); tm {
		case "notBreaching":
		case "missing", "":
			if canonical(a.props["InsufficientDataActions"]) != `["${AlarmTopic}"]` {
				t.Errorf("%s treats missing data as missing but does not notify INSUFFICIENT_DATA, its only way to fail", a.id)
			}
		default:
			t.Errorf("%s: TreatMissingData %s: a fresh stack, with no data yet, would notify", a.id, tm)
		}
	}
	c := all["CleanupStalledAlarm"]
	if c == nil {
		t.Fatal("no CleanupStalledAlarm")
	}
	if c.prop("TreatMissingData") != "missing" || c.prop("Statistic") != "SampleCount" || len(c.metrics) != 1 ||
		c.metrics[0].name != metrics.LiveSandboxes {
		t.Errorf("CleanupStalledAlarm: %s of %v treating missing data as %q; want the SampleCount of LiveSandboxes, missing",
			c.prop("Statistic"), c.metrics, c.prop("TreatMissingData"))
	}
}
