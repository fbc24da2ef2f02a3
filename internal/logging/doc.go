// Package logging builds sandgate's one log format: log/slog JSON, one line per event,
// with the Lambda request id when there is one, and the key names every package shares.
package logging
