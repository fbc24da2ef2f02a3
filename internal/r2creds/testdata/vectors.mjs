// Test vectors for r2creds, computed independently of the Go code: the steps of
// https://developers.cloudflare.com/r2/examples/authenticate-r2-temp-credentials/
// (the jose helper) with node:crypto — header {alg: HS256, typ: JWT}, claims {bucket,
// scope, actions?, paths?, sub, iss, aud, iat, exp}, HS256 with the parent secret's
// UTF-8 bytes, secret = sha256 hex of the JWT, token = btoa("jwt/" + jwt).
// Run: node internal/r2creds/testdata/vectors.mjs > internal/r2creds/testdata/vectors.json
import { createHash, createHmac } from "node:crypto";

const b64url = (s) => Buffer.from(s).toString("base64url");

function mint(c) {
  const claims = { bucket: c.bucket, scope: c.permission };
  if (c.actions !== undefined && c.actions.length > 0) claims.actions = c.actions;
  if (c.prefixes !== undefined || c.objects !== undefined) {
    claims.paths = { prefixPaths: c.prefixes ?? [], objectPaths: c.objects ?? [] };
  }
  claims.sub = c.accountId;
  claims.iss = c.accessKeyId;
  claims.aud = new URL(c.endpoint).host;
  claims.iat = c.now;
  claims.exp = c.now + c.ttlSeconds;
  const input = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(claims));
  const jwt = input + "." + createHmac("sha256", Buffer.from(c.secretAccessKey, "utf8")).update(input).digest("base64url");
  return {
    accessKeyId: c.accessKeyId,
    secretAccessKey: createHash("sha256").update(jwt).digest("hex"),
    sessionToken: btoa(`jwt/${jwt}`),
    jwt,
  };
}

const cases = [
  {
    name: "prefix, read-write",
    accessKeyId: "0123456789abcdef0123456789abcdef", secretAccessKey: "parent-secret-ünï", accountId: "023e105f4ecef8ad9ca31a8372d0c353",
    endpoint: "https://023e105f4ecef8ad9ca31a8372d0c353.r2.cloudflarestorage.com",
    bucket: "sandgate-data", permission: "object-read-write", prefixes: ["users/user_abc/"], ttlSeconds: 3600, now: 1767225600,
  },
  {
    name: "whole bucket, read-only, actions, EU endpoint",
    accessKeyId: "fedcba9876543210fedcba9876543210", secretAccessKey: "another secret", accountId: "abcdef0123456789abcdef0123456789",
    endpoint: "https://abcdef0123456789abcdef0123456789.eu.r2.cloudflarestorage.com",
    bucket: "b", permission: "object-read-only", actions: ["GetObject", "HeadObject"], ttlSeconds: 900, now: 1767225601,
  },
  {
    name: "objects only",
    accessKeyId: "k", secretAccessKey: "s", accountId: "a", endpoint: "https://a.r2.cloudflarestorage.com",
    bucket: "b", permission: "admin-read-only", objects: ["shared/manifest.json"], ttlSeconds: 604800, now: 1767225602,
  },
];

console.log(JSON.stringify(cases.map((c) => ({ input: c, want: mint(c) })), null, 2));
