import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Signer, signature, validUserId } from "./sign.mjs";

const { vectors } = JSON.parse(
  readFileSync(new URL("../testdata/vectors.json", import.meta.url), "utf8"),
);

test("signature matches every shared vector", () => {
  assert.ok(vectors.length > 0);
  for (const v of vectors) {
    assert.equal(signature(v.secret, v.userId, v.exp), v.sig, `${v.userId}.${v.exp}`);
  }
});

test("Signer.sign uses now + ttl and the vector signature", () => {
  const v = vectors[0];
  const s = new Signer(v.secret, { ttlSeconds: 600, now: () => (v.exp - 600) * 1000 + 999 });
  assert.deepEqual(s.sign(v.userId), { userId: v.userId, exp: v.exp, sig: v.sig });
});

test("Signer.signUrl appends the query in the Go signer's order", () => {
  const v = vectors[0];
  const s = new Signer(v.secret, { ttlSeconds: 0, now: () => v.exp * 1000 });
  assert.equal(
    s.signUrl("wss://api.example.com/prod", v.userId),
    `wss://api.example.com/prod?userId=${v.userId}&exp=${v.exp}&sig=${v.sig}`,
  );
  assert.match(s.signUrl("wss://x/y?a=1", v.userId), /^wss:\/\/x\/y\?a=1&userId=/);
});

test("Signer refuses a missing or short secret", () => {
  assert.throws(() => new Signer(""), /no signing secret/);
  assert.throws(() => new Signer("x".repeat(31)), /shorter than 32 bytes/);
  new Signer("x".repeat(32));
});

test("Signer refuses ids the verifier would refuse", () => {
  const s = new Signer("x".repeat(32));
  for (const id of ["user_", "User_a", "user_a/../user_b", "user_é", "user_" + "a".repeat(65), "", null]) {
    assert.equal(validUserId(id), false, String(id));
    assert.throws(() => s.sign(id), /invalid user id/);
  }
  assert.equal(validUserId("user_" + "a".repeat(64)), true);
});
