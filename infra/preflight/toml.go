package preflight

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// parseTOML reads the part of TOML (v1.0) that samconfig.toml files use, as SAM CLI
// writes them and as people edit them: comments; [table] headers with dotted bare or
// quoted keys; key = value lines with dotted keys; basic and literal strings, single-
// and multi-line; integers, floats and booleans; arrays of those, across lines. Dates
// are kept as their text. Tables are map[string]any; values are string, int64,
// float64, bool or []any. Inline tables and arrays of tables ([[x]]) are refused with
// their line, as are duplicate keys.
func parseTOML(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("not UTF-8")
	}
	p := &tomlParser{s: strings.TrimPrefix(string(data), "\ufeff"), line: 1}
	root := map[string]any{}
	current := root
	for {
		p.skipBlank(true)
		if p.eof() {
			return root, nil
		}
		if p.peek() == '[' {
			if strings.HasPrefix(p.rest(), "[[") {
				return nil, p.errorf("arrays of tables ([[…]]) are not supported")
			}
			p.i++
			p.skipSpace()
			path, err := p.keyPath()
			if err != nil {
				return nil, err
			}
			p.skipSpace()
			if p.eof() || p.peek() != ']' {
				return nil, p.errorf("expected ] after the table name")
			}
			p.i++
			if current, err = p.table(root, path); err != nil {
				return nil, err
			}
			if err := p.endOfLine(); err != nil {
				return nil, err
			}
			continue
		}
		path, err := p.keyPath()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.eof() || p.peek() != '=' {
			return nil, p.errorf("expected = after key %s", strings.Join(path, "."))
		}
		p.i++
		p.skipSpace()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		t, err := p.table(current, path[:len(path)-1])
		if err != nil {
			return nil, err
		}
		k := path[len(path)-1]
		if _, dup := t[k]; dup {
			return nil, p.errorf("key %s is defined twice", strings.Join(path, "."))
		}
		t[k] = v
		if err := p.endOfLine(); err != nil {
			return nil, err
		}
	}
}

type tomlParser struct {
	s    string
	i    int
	line int
}

func (p *tomlParser) eof() bool    { return p.i >= len(p.s) }
func (p *tomlParser) peek() byte   { return p.s[p.i] }
func (p *tomlParser) rest() string { return p.s[p.i:] }

func (p *tomlParser) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: %s", p.line, fmt.Sprintf(format, args...))
}

// skipSpace skips spaces and tabs.
func (p *tomlParser) skipSpace() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// skipBlank skips spaces, comments and, when newlines is set, line ends.
func (p *tomlParser) skipBlank(newlines bool) {
	for !p.eof() {
		switch c := p.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			p.i++
		case c == '\n' && newlines:
			p.i++
			p.line++
		case c == '#':
			for !p.eof() && p.peek() != '\n' {
				p.i++
			}
		default:
			return
		}
	}
}

// endOfLine accepts spaces and a comment up to the end of the line.
func (p *tomlParser) endOfLine() error {
	p.skipBlank(false)
	if p.eof() {
		return nil
	}
	if p.peek() != '\n' {
		return p.errorf("unexpected %q after the value", p.peek())
	}
	p.i++
	p.line++
	return nil
}

// table returns the table at path under t, creating it (and those above it).
func (p *tomlParser) table(t map[string]any, path []string) (map[string]any, error) {
	for _, k := range path {
		switch v := t[k].(type) {
		case nil:
			n := map[string]any{}
			t[k] = n
			t = n
		case map[string]any:
			t = v
		default:
			return nil, p.errorf("%s is a value, not a table", k)
		}
	}
	return t, nil
}

func isBareKeyChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// keyPath reads a dotted key: bare or quoted parts.
func (p *tomlParser) keyPath() ([]string, error) {
	var path []string
	for {
		p.skipSpace()
		if p.eof() {
			return nil, p.errorf("expected a key")
		}
		switch c := p.peek(); {
		case c == '"' || c == '\'':
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			path = append(path, k)
		case isBareKeyChar(c):
			start := p.i
			for !p.eof() && isBareKeyChar(p.peek()) {
				p.i++
			}
			path = append(path, p.s[start:p.i])
		default:
			return nil, p.errorf("unexpected %q where a key belongs", c)
		}
		p.skipSpace()
		if p.eof() || p.peek() != '.' {
			return path, nil
		}
		p.i++
	}
}

func (p *tomlParser) value() (any, error) {
	if p.eof() {
		return nil, p.errorf("expected a value")
	}
	switch c := p.peek(); {
	case c == '"' || c == '\'':
		return p.str()
	case c == '[':
		return p.array()
	case c == '{':
		return nil, p.errorf("inline tables ({…}) are not supported")
	}
	start := p.i
	for !p.eof() && strings.IndexByte(" \t\r\n#,]", p.peek()) < 0 {
		p.i++
	}
	tok := p.s[start:p.i]
	switch tok {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "":
		return nil, p.errorf("expected a value")
	}
	plain := strings.ReplaceAll(tok, "_", "")
	if n, err := strconv.ParseInt(plain, 0, 64); err == nil {
		return n, nil
	}
	if f, err := strconv.ParseFloat(plain, 64); err == nil {
		return f, nil
	}
	if tok[0] >= '0' && tok[0] <= '9' {
		return tok, nil // a date or time, kept as written
	}
	return nil, p.errorf("unexpected value %q (strings are quoted)", tok)
}

func (p *tomlParser) array() ([]any, error) {
	p.i++ // [
	out := []any{}
	for {
		p.skipBlank(true)
		if p.eof() {
			return nil, p.errorf("unterminated array")
		}
		if p.peek() == ']' {
			p.i++
			return out, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.skipBlank(true)
		if p.eof() {
			return nil, p.errorf("unterminated array")
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
		default:
			return nil, p.errorf("expected , or ] in an array")
		}
	}
}

// str reads a basic ("…", """…""") or literal ('…', ”'…”') string.
func (p *tomlParser) str() (string, error) {
	q := p.peek()
	multi := strings.HasPrefix(p.rest(), strings.Repeat(string(q), 3))
	if multi {
		p.i += 3
		// A newline right after the opening delimiter is not part of the string.
		if strings.HasPrefix(p.rest(), "\r\n") {
			p.i += 2
			p.line++
		} else if strings.HasPrefix(p.rest(), "\n") {
			p.i++
			p.line++
		}
	} else {
		p.i++
	}
	var b strings.Builder
	for {
		if p.eof() {
			return "", p.errorf("unterminated string")
		}
		c := p.peek()
		switch {
		case c == q && (!multi || strings.HasPrefix(p.rest(), strings.Repeat(string(q), 3))):
			if multi {
				p.i += 3
				// Up to two more quotes right before the closing delimiter belong to the string.
				for n := 0; n < 2 && !p.eof() && p.peek() == q; n++ {
					b.WriteByte(q)
					p.i++
				}
			} else {
				p.i++
			}
			return b.String(), nil
		case c == '\n':
			if !multi {
				return "", p.errorf("newline in a single-line string")
			}
			p.line++
			b.WriteByte(c)
			p.i++
		case c == '\\' && q == '"':
			if err := p.escape(&b, multi); err != nil {
				return "", err
			}
		default:
			b.WriteByte(c)
			p.i++
		}
	}
}

// escape decodes one backslash escape of a basic string.
func (p *tomlParser) escape(b *strings.Builder, multi bool) error {
	p.i++ // the backslash
	if p.eof() {
		return p.errorf("unterminated string")
	}
	c := p.peek()
	p.i++
	switch c {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case 'e':
		b.WriteByte(0x1b)
	case '"':
		b.WriteByte('"')
	case '\\':
		b.WriteByte('\\')
	case 'u', 'U':
		n := 4
		if c == 'U' {
			n = 8
		}
		if p.i+n > len(p.s) {
			return p.errorf("short \\%c escape", c)
		}
		r, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
		if err != nil || !utf8.ValidRune(rune(r)) {
			return p.errorf("invalid \\%c escape", c)
		}
		p.i += n
		b.WriteRune(rune(r))
	case ' ', '\t', '\r', '\n':
		// A line-ending backslash in a multi-line string trims the line end and the
		// whitespace after it.
		if !multi {
			return p.errorf("invalid escape \\%q", c)
		}
		p.i--
		for !p.eof() && strings.IndexByte(" \t\r", p.peek()) >= 0 {
			p.i++
		}
		if p.eof() || p.peek() != '\n' {
			return p.errorf("a backslash in a multi-line string must end its line")
		}
		for !p.eof() && strings.IndexByte(" \t\r\n", p.peek()) >= 0 {
			if p.peek() == '\n' {
				p.line++
			}
			p.i++
		}
	default:
		return p.errorf("invalid escape \\%c", c)
	}
	return nil
}
