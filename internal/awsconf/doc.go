// Package awsconf loads the one AWS configuration every sandgate process uses, so that
// the same code reaches AWS, Cloudflare R2 and the local stack: endpoints come from the
// standard AWS_ENDPOINT_URL_* variables, never from code.
package awsconf
