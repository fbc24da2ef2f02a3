// Package r2creds mints Cloudflare R2 temporary credentials locally, without calling
// Cloudflare's API, as R2 documents client-side signing: a JWT naming the bucket and
// the scope, signed (HS256) with the parent API token's secret access key, becomes the
// session token; the temporary secret is the SHA-256 of that JWT.
package r2creds
