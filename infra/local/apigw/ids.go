package apigw

import (
	"crypto/rand"
	"encoding/base64"
	"time"
)

// newID returns an id shaped like API Gateway's connection, request and message ids:
// 16 URL-safe base64 characters ending in "=", such as "JC1dgf9yoAMCK-g=".
func newID() string {
	b := make([]byte, 11)
	_, _ = rand.Read(b)
	return base64.URLEncoding.EncodeToString(b)
}

// newAPIID returns a 10-character lower-case id like "dl7ptocha9".
func newAPIID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// requestTime formats t as API Gateway's requestTime: "20/Jan/2024:11:55:08 +0000".
func requestTime(t time.Time) string { return t.UTC().Format("02/Jan/2006:15:04:05 -0700") }
