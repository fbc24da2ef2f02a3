package preflight

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultConfigEnv is the samconfig.toml environment sam deploy reads without
// --config-env.
const DefaultConfigEnv = "default"

// Samconfig is what `sam deploy` would take from a samconfig.toml environment: the
// keys of [<env>.deploy.parameters], else of [<env>.global.parameters] (SAM CLI's
// precedence: a command's own section over global).
type Samconfig struct {
	// Path and Env say where the values came from.
	Path, Env string
	// StackName, Region and Profile are stack_name, region and profile; "" when unset.
	StackName, Region, Profile string
	// Overrides are parameter_overrides, parsed: parameter name → value.
	Overrides map[string]string
	// OverridesFrom names the table parameter_overrides came from ("" when none).
	OverridesFrom string
}

// ReadSamconfig reads environment env of the samconfig.toml at path. A missing file
// is an error wrapping os.ErrNotExist.
func ReadSamconfig(path, env string) (*Samconfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read samconfig: %w", err)
	}
	sc, err := ParseSamconfig(data, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sc.Path = path
	return sc, nil
}

// ParseSamconfig parses a samconfig.toml's environment env (DefaultConfigEnv when "").
func ParseSamconfig(data []byte, env string) (*Samconfig, error) {
	if env == "" {
		env = DefaultConfigEnv
	}
	doc, err := parseTOML(data)
	if err != nil {
		return nil, err
	}
	sc := &Samconfig{Env: env, Overrides: map[string]string{}}
	envTable, _ := doc[env].(map[string]any)
	if envTable == nil {
		if _, present := doc[env]; present {
			return nil, fmt.Errorf("%s is not a table", env)
		}
		return sc, nil // no such environment: nothing configured
	}
	// Most specific first.
	for _, cmd := range []string{"deploy", "global"} {
		section := env + "." + cmd + ".parameters"
		cmdTable, _ := envTable[cmd].(map[string]any)
		params, _ := cmdTable["parameters"].(map[string]any)
		if params == nil {
			continue
		}
		for key, dst := range map[string]*string{"stack_name": &sc.StackName, "region": &sc.Region, "profile": &sc.Profile} {
			if *dst != "" {
				continue
			}
			if v, ok := params[key]; ok {
				s, ok := v.(string)
				if !ok {
					return nil, fmt.Errorf("[%s] %s is not a string", section, key)
				}
				*dst = s
			}
		}
		if sc.OverridesFrom != "" {
			continue
		}
		v, ok := params["parameter_overrides"]
		if !ok {
			continue
		}
		var lists []string
		switch v := v.(type) {
		case string:
			lists = []string{v}
		case []any:
			for _, item := range v {
				s, ok := item.(string)
				if !ok {
					return nil, fmt.Errorf("[%s] parameter_overrides: %v is not a string", section, item)
				}
				lists = append(lists, s)
			}
		default:
			return nil, fmt.Errorf("[%s] parameter_overrides is neither a string nor a list of strings", section)
		}
		for _, s := range lists {
			m, err := ParseOverrides(s)
			if err != nil {
				return nil, fmt.Errorf("[%s] parameter_overrides: %w", section, err)
			}
			for k, v := range m {
				sc.Overrides[k] = v
			}
		}
		sc.OverridesFrom = section
	}
	return sc, nil
}

// ErrOverrides is wrapped by ParseOverrides' errors.
var ErrOverrides = errors.New("malformed parameter overrides")

// ParseOverrides parses parameter overrides as `sam deploy --parameter-overrides` and
// samconfig.toml's parameter_overrides take them: space-separated Key=Value or
// ParameterKey=Key,ParameterValue=Value pairs, where a value is "double-quoted" or
// 'single-quoted' (a backslash escapes the next character) or runs to the next space;
// quotes around a value are removed and \ (backslash space), \" and \' unescaped, as
// SAM CLI does (samcli/cli/types.py, CfnParameterOverridesType).
func ParseOverrides(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	fail := func(format string, args ...any) (map[string]string, error) {
		return nil, fmt.Errorf("%w: at %d of %q: %s", ErrOverrides, i, s, fmt.Sprintf(format, args...))
	}
	isKey := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '"' || c == '\''
	}
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && isKey(s[i]) {
			i++
		}
		key := unquoteOverride(s[start:i])
		if key == "" || i == len(s) || s[i] != '=' {
			return fail("expected Key=Value")
		}
		i++
		if key == "ParameterKey" {
			start = i
			for i < len(s) && isKey(s[i]) {
				i++
			}
			key = unquoteOverride(s[start:i])
			const sep = ",ParameterValue="
			if key == "" || !strings.HasPrefix(s[i:], sep) {
				return fail("expected ParameterKey=Key,ParameterValue=Value")
			}
			i += len(sep)
		}
		start = i
		if i < len(s) && (s[i] == '"' || s[i] == '\'') {
			q := s[i]
			i++
			for i < len(s) && s[i] != q {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				return fail("unterminated quote")
			}
			i++
			if i < len(s) && !isSpace(s[i]) {
				return fail("expected a space after the quoted value of %s", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				switch s[i] {
				case '\\':
					i++
				case '"', '\'':
					return fail("a quote inside the unquoted value of %s", key)
				}
				i++
			}
			if i > len(s) {
				i = len(s)
			}
		}
		out[key] = unquoteOverride(s[start:i])
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// unquoteOverride removes wrapping quotes and unescapes \ (backslash space), \" and \'.
func unquoteOverride(v string) string {
	if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
		v = v[1 : len(v)-1]
	}
	return strings.NewReplacer(`\ `, " ", `\"`, `"`, `\'`, "'").Replace(v)
}
