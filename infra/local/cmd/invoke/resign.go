package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/sandgate/sandgate/sdk/go/sign"
)

// resign gives an event that carries a signed connection query (the authorizer's,
// Connect's, and the HTTP API's events) a fresh expiry and signature under secret, so a
// sample event recorded long ago is not refused as expired. It returns the event
// unchanged, and "" for who, when the event carries no signed query.
func resign(event []byte, secret string, now time.Time) (out []byte, who string, err error) {
	var m map[string]any
	if err := json.Unmarshal(event, &m); err != nil {
		return nil, "", fmt.Errorf("read event: %w", err)
	}
	user := ""
	if q, ok := m["queryStringParameters"].(map[string]any); ok {
		user, _ = q[sign.ParamUserID].(string)
	}
	if raw, ok := m["rawQueryString"].(string); ok && user == "" {
		if q, err := url.ParseQuery(raw); err == nil {
			user = q.Get(sign.ParamUserID)
		}
	}
	if user == "" {
		return event, "", nil
	}
	s, err := sign.NewSigner(secret)
	if err != nil {
		return nil, "", err
	}
	s.Now = func() time.Time { return now }
	signed, err := s.Sign(user)
	if err != nil {
		return nil, "", fmt.Errorf("re-sign the event's query: %w", err)
	}
	exp := strconv.FormatInt(signed.Exp, 10)
	if q, ok := m["queryStringParameters"].(map[string]any); ok {
		q[sign.ParamExp], q[sign.ParamSig] = exp, signed.Sig
	}
	if q, ok := m["multiValueQueryStringParameters"].(map[string]any); ok {
		q[sign.ParamExp], q[sign.ParamSig] = []any{exp}, []any{signed.Sig}
	}
	if _, ok := m["rawQueryString"].(string); ok {
		m["rawQueryString"] = signed.Query()
	}
	out, err = json.Marshal(m)
	return out, user, err
}
