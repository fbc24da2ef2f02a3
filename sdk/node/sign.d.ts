export declare const MIN_SECRET_BYTES: number;
export declare const DEFAULT_TTL_SECONDS: number;
export declare function validUserId(id: unknown): id is string;
export declare function signature(secret: string, userId: string, exp: number): string;
export interface Signed {
  userId: string;
  exp: number;
  sig: string;
}
export declare class Signer {
  constructor(secret: string, options?: { ttlSeconds?: number; now?: () => number });
  ttlSeconds: number;
  now: () => number;
  sign(userId: string): Signed;
  signUrl(base: string, userId: string): string;
}
