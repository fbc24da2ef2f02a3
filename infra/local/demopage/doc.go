// Package demopage serves the local stack's demo page and its development-only endpoints:
// signing a URL for any user (the local secret is public), restarting a user's sandbox,
// and listing a user's stored files. None of this exists in AWS.
package demopage
