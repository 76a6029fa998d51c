import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * A grant: what lets one runtime host read one snapshot's artifacts from another for a short while
 * (docs/api.md "Artifacts"). `Grant <snapshotId>.<expiresAtMs>.<hex HMAC-SHA256>`, keyed by the
 * sha256 (hex) of the source server's API key: the control plane knows the key (a host's control
 * credential), the source host keeps only its digest, and no other host knows either.
 */
export function snapshotGrant(keyDigestHex: string, snapshotId: string, ttlMs: number, now = Date.now()): string {
  const expires = now + ttlMs;
  return `${snapshotId}.${expires}.${sign(keyDigestHex, snapshotId, expires)}`;
}

function sign(keyDigestHex: string, snapshotId: string, expires: number): string {
  return createHmac('sha256', keyDigestHex).update(`${snapshotId}.${expires}`).digest('hex');
}

/** Whether `grant` lets its bearer read snapshot `snapshotId` now (constant-time comparison). */
export function checkGrant(keyDigestHex: string, grant: string, snapshotId: string, now = Date.now()): 'ok' | 'expired' | 'invalid' {
  const m = /^([a-z0-9_]{1,64})\.([0-9]{1,16})\.([0-9a-f]{64})$/.exec(grant);
  if (!m || m[1] !== snapshotId) return 'invalid';
  const expected = Buffer.from(sign(keyDigestHex, snapshotId, Number(m[2])), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(m[3]!, 'hex'))) return 'invalid';
  return Number(m[2]) < now ? 'expired' : 'ok';
}
