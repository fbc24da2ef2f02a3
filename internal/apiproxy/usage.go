package apiproxy

import (
	"bytes"
	"encoding/json"
	"mime"
)

// usageFields are the token counts model APIs report in their answers' usage objects
// (Anthropic's and OpenAI's "usage", Gemini's "usageMetadata"). A total is left out:
// it repeats the others.
var usageFields = map[string]bool{
	"input_tokens": true, "output_tokens": true,
	"cache_creation_input_tokens": true, "cache_read_input_tokens": true,
	"prompt_tokens": true, "completion_tokens": true,
	"promptTokenCount": true, "candidatesTokenCount": true,
}

// maxMeteredJSON bounds how much of a JSON answer is kept to read its usage; a larger
// answer is passed on whole but counts nothing.
const maxMeteredJSON = 8 << 20

// meter reads the tokens an answer reports: in every usage object of a JSON answer,
// or of each event of a stream (server-sent events). A stream reports a count more
// than once as it grows (Anthropic's output_tokens in message_start, then in
// message_delta), so each field's largest value counts.
type meter struct {
	sse    bool
	json   bool
	buf    bytes.Buffer
	over   bool
	fields map[string]int64
}

func newMeter(contentType string) *meter {
	mt, _, _ := mime.ParseMediaType(contentType)
	return &meter{sse: mt == "text/event-stream", json: mt == "application/json", fields: map[string]int64{}}
}

// write takes the next bytes of the answer.
func (m *meter) write(p []byte) {
	switch {
	case m.sse:
		m.buf.Write(p)
		for {
			line, err := m.buf.ReadBytes('\n')
			if err != nil {
				// An incomplete line waits for the rest (bounded: one event's line).
				if len(line) <= maxMeteredJSON {
					m.buf.Reset()
					m.buf.Write(line)
				} else {
					m.buf.Reset()
				}
				return
			}
			if data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data:")); ok {
				m.read(bytes.TrimSpace(data))
			}
		}
	case m.json && !m.over:
		if m.buf.Len()+len(p) > maxMeteredJSON {
			m.over = true
			m.buf.Reset()
			return
		}
		m.buf.Write(p)
	}
}

// tokens is the answer's spend: the sum of each field's largest count.
func (m *meter) tokens() int64 {
	if m.json && !m.over {
		m.read(m.buf.Bytes())
		m.buf.Reset()
	}
	var n int64
	for _, v := range m.fields {
		n += v
	}
	return n
}

func (m *meter) read(data []byte) {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return
	}
	m.walk(v, false)
}

// walk finds usage objects at any depth (Anthropic's message_start nests it in
// "message").
func (m *meter) walk(v any, inUsage bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if n, ok := e.(float64); ok && inUsage && usageFields[k] && n > 0 {
				m.fields[k] = max(m.fields[k], int64(n))
				continue
			}
			m.walk(e, k == "usage" || k == "usageMetadata")
		}
	case []any:
		for _, e := range x {
			m.walk(e, false)
		}
	}
}
