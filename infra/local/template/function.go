package template

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SAM's defaults for a function that sets neither the property nor a global.
const (
	DefaultTimeout    = 3 * time.Second
	DefaultMemorySize = 128
)

// Event types read from a function's Events.
const (
	EventHTTPAPI    = "HttpApi"
	EventSchedule   = "Schedule"
	EventScheduleV2 = "ScheduleV2"
)

// Function is one AWS::Serverless::Function with Globals.Function merged in.
type Function struct {
	LogicalID string
	// FunctionName is the FunctionName property, resolved; empty when CloudFormation
	// names the function.
	FunctionName string
	// Name is the directory name under functions/ by the project's convention:
	// AuthorizeFunction → authorize. Dir is functions/<Name>.
	Name, Dir string
	Handler   string
	Runtime   string
	Timeout   time.Duration
	// MemorySize in MiB.
	MemorySize   int
	Architecture string
	// LogFormat is LoggingConfig.LogFormat ("JSON" or "Text"); LogLevel is its
	// ApplicationLogLevel, empty when unset.
	LogFormat, LogLevel string
	// ReservedConcurrency is ReservedConcurrentExecutions, 0 when unset.
	ReservedConcurrency int
	// AsyncRetries is EventInvokeConfig.MaximumRetryAttempts, nil when unset (Lambda's
	// default of 2 applies).
	AsyncRetries *int
	// Environment is the function's Environment.Variables, resolved.
	Environment map[string]string
	Events      []Event
	// Role is the execution role's ARN; LogGroup the LoggingConfig.LogGroup it writes
	// to (empty: Lambda's /aws/lambda/<name>); InVPC reports a VpcConfig with subnets,
	// for which Lambda uses the role to manage network interfaces. Read with
	// Options.Roles.
	Role, LogGroup string
	InVPC          bool
	// URLAuthType is FunctionUrlConfig.AuthType (AWS_IAM or NONE); empty when the
	// function has no URL.
	URLAuthType string
}

// Event is one entry of a function's Events that the local stack can serve.
type Event struct {
	Name string
	Type string
	// HTTPAPI is the logical id of the HttpApi (ServerlessHttpApi when implicit);
	// Method is upper case ("ANY" for any); Path is the route path.
	HTTPAPI, Method, Path string
	// Schedule is the rate() or cron() expression; Enabled is false when the
	// schedule is declared disabled.
	Schedule string
	Enabled  bool
	// RoleArn is the role a ScheduleV2 event's schedule invokes the function with
	// (read with Options.Roles).
	RoleArn string
}

// EnvironmentNames returns the function's variable names, sorted.
func (f *Function) EnvironmentNames() []string {
	names := make([]string, 0, len(f.Environment))
	for k := range f.Environment {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// DirName returns the functions/ directory name for a logical id.
func DirName(logicalID string) string {
	return strings.ToLower(strings.TrimSuffix(logicalID, functionIDSuffix))
}

func (e *evaluator) readFunction(r *Resource, props *yaml.Node) (*Function, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	f := &Function{
		LogicalID:   r.LogicalID,
		Name:        DirName(r.LogicalID),
		Environment: map[string]string{},
	}
	f.Dir = functionsDir + "/" + f.Name
	var err error
	if f.FunctionName, err = e.optStr(props, "FunctionName", base); err != nil {
		return nil, err
	}
	if f.Handler, err = e.optStr(props, "Handler", base); err != nil {
		return nil, err
	}
	if f.Runtime, err = e.optStr(props, "Runtime", base); err != nil {
		return nil, err
	}
	if f.Timeout, err = e.optSeconds(props, "Timeout", base, DefaultTimeout); err != nil {
		return nil, err
	}
	if f.MemorySize, err = e.optPosInt(props, "MemorySize", base, DefaultMemorySize); err != nil {
		return nil, err
	}
	if f.ReservedConcurrency, err = e.optPosInt(props, "ReservedConcurrentExecutions", base, 0); err != nil {
		return nil, err
	}
	if n := Lookup(Lookup(props, "EventInvokeConfig"), "MaximumRetryAttempts"); n != nil {
		v, err := e.str(n, base+".EventInvokeConfig.MaximumRetryAttempts")
		if err != nil {
			return nil, err
		}
		r, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || r < 0 || r > 2 {
			return nil, pathErrf(base+".EventInvokeConfig.MaximumRetryAttempts", ErrInvalid, "want 0, 1 or 2, got %q", v)
		}
		f.AsyncRetries = &r
	}
	if n := Lookup(props, "Architectures"); n != nil {
		list, err := e.list(n, base+".Architectures")
		if err != nil {
			return nil, err
		}
		if len(list) > 0 {
			f.Architecture, _ = list[0].(string)
		}
	}
	lc := Lookup(props, "LoggingConfig")
	if f.LogFormat, err = e.optStr(lc, "LogFormat", base+".LoggingConfig"); err != nil {
		return nil, err
	}
	if f.LogLevel, err = e.optStr(lc, "ApplicationLogLevel", base+".LoggingConfig"); err != nil {
		return nil, err
	}
	if uc := Lookup(props, "FunctionUrlConfig"); uc != nil {
		if f.URLAuthType, err = e.optStr(uc, "AuthType", base+".FunctionUrlConfig"); err != nil {
			return nil, err
		}
		switch f.URLAuthType {
		case "AWS_IAM", "NONE":
		default:
			return nil, pathErrf(base+".FunctionUrlConfig.AuthType", ErrInvalid, "want AWS_IAM or NONE, got %q", f.URLAuthType)
		}
	}
	if e.identities {
		if f.Role, err = e.optStr(props, "Role", base); err != nil {
			return nil, err
		}
		if f.LogGroup, err = e.optStr(lc, "LogGroup", base+".LoggingConfig"); err != nil {
			return nil, err
		}
		if n := Lookup(Lookup(props, "VpcConfig"), "SubnetIds"); n != nil {
			subnets, err := e.list(n, base+".VpcConfig.SubnetIds")
			if err != nil {
				return nil, err
			}
			f.InVPC = len(subnets) > 0
		}
	}
	if vars := Lookup(Lookup(props, "Environment"), "Variables"); vars != nil {
		path := base + ".Environment.Variables"
		if _, _, call := Intrinsic(vars); call || vars.Kind != yaml.MappingNode {
			return nil, pathErrf(path, ErrInvalid, "want a map of variables")
		}
		for i := 0; i+1 < len(vars.Content); i += 2 {
			k := vars.Content[i].Value
			v, err := e.eval(vars.Content[i+1], path+"."+k)
			if err != nil {
				return nil, err
			}
			if v == noValue {
				continue
			}
			s, ok := v.(string)
			if !ok && v != nil {
				return nil, pathErrf(path+"."+k, ErrInvalid, "want a string, got %s", kind(v))
			}
			if s, err = e.dynamic(s, path+"."+k); err != nil {
				return nil, err
			}
			f.Environment[k] = s
		}
	}
	if evs := Lookup(props, "Events"); evs != nil {
		for i := 0; i+1 < len(evs.Content); i += 2 {
			ev, ok, err := e.readEvent(evs.Content[i].Value, deref(evs.Content[i+1]), base+".Events."+evs.Content[i].Value)
			if err != nil {
				return nil, err
			}
			if ok {
				f.Events = append(f.Events, ev)
			}
		}
	}
	return f, nil
}

func (e *evaluator) readEvent(name string, n *yaml.Node, path string) (Event, bool, error) {
	ev := Event{Name: name, Enabled: true}
	var err error
	if ev.Type, err = e.optStr(n, "Type", path); err != nil {
		return ev, false, err
	}
	p := Lookup(n, "Properties")
	pp := path + ".Properties"
	switch ev.Type {
	case EventHTTPAPI:
		ev.HTTPAPI = implicitHTTPAPIID
		if id := Lookup(p, "ApiId"); id != nil {
			ids := Refs(id)
			if len(ids) != 1 {
				return ev, false, pathErrf(pp+".ApiId", ErrInvalid, "want !Ref of an AWS::Serverless::HttpApi")
			}
			ev.HTTPAPI = ids[0]
		}
		if ev.Method, err = e.optStr(p, "Method", pp); err != nil {
			return ev, false, err
		}
		if ev.Path, err = e.optStr(p, "Path", pp); err != nil {
			return ev, false, err
		}
		ev.Method = strings.ToUpper(ev.Method)
		if ev.Method == "" || ev.Method == "X-AMAZON-APIGATEWAY-ANY-METHOD" {
			ev.Method = "ANY"
		}
		if ev.Path == "" {
			ev.Path = "$default"
		}
	case EventSchedule, EventScheduleV2:
		key := "Schedule"
		if ev.Type == EventScheduleV2 {
			key = "ScheduleExpression"
		}
		if ev.Schedule, err = e.optStr(p, key, pp); err != nil {
			return ev, false, err
		}
		if ev.Schedule == "" {
			return ev, false, pathErrf(pp+"."+key, ErrInvalid, "schedule expression is required")
		}
		if en, err := e.optStr(p, "Enabled", pp); err != nil {
			return ev, false, err
		} else if en == "false" {
			ev.Enabled = false
		}
		if st, err := e.optStr(p, "State", pp); err != nil {
			return ev, false, err
		} else if st == "DISABLED" {
			ev.Enabled = false
		}
		if e.identities && ev.Type == EventScheduleV2 {
			if ev.RoleArn, err = e.optStr(p, "RoleArn", pp); err != nil {
				return ev, false, err
			}
		}
	default:
		return ev, false, nil
	}
	return ev, true, nil
}

// optStr evaluates the string property key of m, "" when absent.
func (e *evaluator) optStr(m *yaml.Node, key, path string) (string, error) {
	n := Lookup(m, key)
	if n == nil {
		return "", nil
	}
	return e.str(n, path+"."+key)
}

// optPosInt evaluates the property key of m, a positive integer; def when absent or
// AWS::NoValue (an optional property behind a condition).
func (e *evaluator) optPosInt(m *yaml.Node, key, path string, def int) (int, error) {
	n := Lookup(m, key)
	if n == nil {
		return def, nil
	}
	path += "." + key
	if v, err := e.eval(n, path); err == nil {
		if _, none := v.(noValueT); none {
			return def, nil
		}
	}
	s, err := e.str(n, path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v <= 0 {
		return 0, pathErrf(path, ErrInvalid, "want a positive integer, got %q", s)
	}
	return v, nil
}

// optSeconds evaluates the property key of m, a positive number of seconds; def when
// absent.
func (e *evaluator) optSeconds(m *yaml.Node, key, path string, def time.Duration) (time.Duration, error) {
	secs, err := e.optPosInt(m, key, path, 0)
	if err != nil || secs == 0 {
		return def, err
	}
	return time.Duration(secs) * time.Second, nil
}

func (e *evaluator) functionOf(n *yaml.Node, path string) (string, error) {
	for _, id := range Refs(n) {
		if r, ok := e.resources[id]; ok && (r.Type == TypeFunction || r.Type == TypeLambdaFunction) {
			return id, nil
		}
	}
	return "", pathErrf(path, ErrInvalid, "does not refer to a function of this template (want ${SomeFunction.Arn})")
}
