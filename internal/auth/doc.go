// Package auth signs and verifies sandgate's connection URLs:
// ?userId=<id>&exp=<unix seconds>&sig=<base64url(HMAC-SHA256(userId + "." + exp))>.
//
// The format is byte-for-byte what the original Workers design's frontends send, so a
// team moving over keeps its signer. Several secrets may be active at once (rotation):
// the first signs, all verify.
package auth
