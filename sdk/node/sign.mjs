// Signs sandgate connection URLs: ?userId=<id>&exp=<unix seconds>&sig=<base64url(HMAC-SHA256(userId + "." + exp))>.
// The same format and API shape as the Go signer (sdk/go/sign), checked against the
// same test vectors. Only Node's crypto is used, so it runs in any Node server runtime.
import { createHmac } from "node:crypto";

export const MIN_SECRET_BYTES = 32;
export const DEFAULT_TTL_SECONDS = 600;
const USER_ID = /^user_[A-Za-z0-9]{1,64}$/;

/**
 * Reports whether id has the form user_<1–64 ASCII letters or digits>: the rule of the Go
 * package internal/userid.
 */
export function validUserId(id) {
  return typeof id === "string" && USER_ID.test(id);
}

/**
 * The URL signature for userId and exp (unix seconds) under secret: base64url without
 * padding of HMAC-SHA256 keyed by the secret's UTF-8 bytes over `${userId}.${exp}`.
 */
export function signature(secret, userId, exp) {
  return createHmac("sha256", Buffer.from(secret, "utf8"))
    .update(`${userId}.${exp}`, "utf8")
    .digest("base64url");
}

export class Signer {
  /**
   * @param {string} secret the first entry of SIGNING_SECRETS (at least 32 bytes)
   * @param {{ttlSeconds?: number, now?: () => number}} [options] now returns milliseconds
   */
  constructor(secret, { ttlSeconds = DEFAULT_TTL_SECONDS, now = Date.now } = {}) {
    if (typeof secret !== "string" || secret.length === 0) {
      throw new Error("sandgate: no signing secret configured");
    }
    if (Buffer.byteLength(secret, "utf8") < MIN_SECRET_BYTES) {
      throw new Error(`sandgate: signing secret shorter than ${MIN_SECRET_BYTES} bytes`);
    }
    this.#secret = secret;
    this.ttlSeconds = ttlSeconds;
    this.now = now;
  }

  #secret;

  /** Signs userId with an expiry of now + ttlSeconds: { userId, exp, sig }. */
  sign(userId) {
    if (!validUserId(userId)) {
      throw new Error(`sandgate: invalid user id ${JSON.stringify(String(userId).slice(0, 80))}`);
    }
    const exp = Math.floor(this.now() / 1000) + this.ttlSeconds;
    return { userId, exp, sig: signature(this.#secret, userId, exp) };
  }

  /** Appends a signed query for userId to base, e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/prod. */
  signUrl(base, userId) {
    const { exp, sig } = this.sign(userId);
    const sep = base.includes("?") ? "&" : "?";
    return `${base}${sep}userId=${encodeURIComponent(userId)}&exp=${exp}&sig=${sig}`;
  }
}
