import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A fresh secret (256 bits, base64url): join credentials of both directions. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** What is stored of a secret the other side presents: its sha256, hex. */
export function secretDigest(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Whether `presented` is the secret of `digest` (constant time). */
export function matchesDigest(presented: string | undefined, digest: string): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(secretDigest(presented), 'hex');
  const b = Buffer.from(digest, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The bearer token of an Authorization header, if any. */
export function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer (\S+)$/.exec(header ?? '');
  return m?.[1];
}

/**
 * The header in which the control plane presents its credential on preview traffic it forwards to
 * a runtime host (the request's own Authorization belongs to the sandbox's service). Never passed
 * into the guest.
 */
export const CONTROL_HEADER = 'x-nullspace-control';
