// Package eventbridge is the local stack's EventBridge: event patterns compiled and
// matched as EventBridge matches them (exact values, prefix, suffix, equals-ignore-case,
// anything-but, numeric, exists, wildcard, $or), for the rules template.yaml declares.
package eventbridge
