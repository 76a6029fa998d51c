import { createHmac, timingSafeEqual } from 'node:crypto';
import { NsError } from '@nullspace/runtime';

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

/**
 * Whether `grant` lets its bearer read snapshot `snapshotId` now (the signature compared in constant
 * time): `invalid` (malformed, or not signed with this key), `other` (a valid grant for another
 * snapshot), `expired`.
 */
export function checkGrant(keyDigestHex: string, grant: string, snapshotId: string, now = Date.now()): 'ok' | 'expired' | 'invalid' | 'other' {
  const m = /^([a-z0-9_]{1,64})\.([0-9]{1,15})\.([0-9a-f]{64})$/.exec(grant);
  if (!m) return 'invalid';
  const expected = Buffer.from(sign(keyDigestHex, m[1]!, Number(m[2])), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(m[3]!, 'hex'))) return 'invalid';
  if (m[1] !== snapshotId) return 'other';
  return Number(m[2]) <= now ? 'expired' : 'ok';
}

/** `checkGrant` as the API's errors (`keyDigestHex` undefined: a host that has not joined yet, nothing opens). */
export function requireGrant(keyDigestHex: string | undefined, grant: string, snapshotId: string, now = Date.now()): void {
  const r = keyDigestHex === undefined ? 'invalid' : checkGrant(keyDigestHex, grant, snapshotId, now);
  if (r === 'invalid') throw new NsError('grant_invalid', 'invalid grant: malformed, or not signed with this server\'s key');
  if (r === 'other') throw new NsError('grant_forbidden', `the grant is for another snapshot than ${snapshotId}`, { details: { grantedSnapshot: grant.split('.')[0] } });
  if (r === 'expired') {
    const at = Number(grant.split('.')[1]);
    throw new NsError('grant_expired', `the grant expired at ${new Date(at).toISOString()}`, { details: { expiresAtMs: at } });
  }
}
