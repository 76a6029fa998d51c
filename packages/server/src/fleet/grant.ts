import { createHmac, timingSafeEqual } from 'node:crypto';
import { NsError } from '@nullspace/runtime';

/**
 * A grant: what lets one runtime host read one object's artifacts from another for a short while
 * (docs/api.md "Artifacts"). `Grant <subject>.<expiresAtMs>.<hex HMAC-SHA256>`, keyed by the
 * sha256 (hex) of the source server's API key: the control plane knows the key (a host's control
 * credential), the source host keeps only its digest, and no other host knows either. The subject
 * is a snapshot id (`snapshotGrant`) or `template:<name>` (`templateGrant`).
 */
export function grantFor(keyDigestHex: string, subject: string, ttlMs: number, now = Date.now()): string {
  const expires = now + ttlMs;
  return `${subject}.${expires}.${sign(keyDigestHex, subject, expires)}`;
}

/** A grant to read snapshot `snapshotId`'s manifest and layers. */
export function snapshotGrant(keyDigestHex: string, snapshotId: string, ttlMs: number, now = Date.now()): string {
  return grantFor(keyDigestHex, snapshotId, ttlMs, now);
}

/** The grant subject of template `name` (its manifest and files at its current version). */
export const templateSubject = (name: string): string => `template:${name}`;

/** A grant to read template `name`'s manifest and files. */
export function templateGrant(keyDigestHex: string, name: string, ttlMs: number, now = Date.now()): string {
  return grantFor(keyDigestHex, templateSubject(name), ttlMs, now);
}

function sign(keyDigestHex: string, subject: string, expires: number): string {
  return createHmac('sha256', keyDigestHex).update(`${subject}.${expires}`).digest('hex');
}

/**
 * Whether `grant` lets its bearer read `subject` now (the signature compared in constant time):
 * `invalid` (malformed, or not signed with this key), `other` (a valid grant for another subject),
 * `expired`.
 */
export function checkGrant(keyDigestHex: string, grant: string, subject: string, now = Date.now()): 'ok' | 'expired' | 'invalid' | 'other' {
  const m = /^([a-z0-9_:-]{1,80})\.([0-9]{1,15})\.([0-9a-f]{64})$/.exec(grant);
  if (!m) return 'invalid';
  const expected = Buffer.from(sign(keyDigestHex, m[1]!, Number(m[2])), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(m[3]!, 'hex'))) return 'invalid';
  if (m[1] !== subject) return 'other';
  return Number(m[2]) <= now ? 'expired' : 'ok';
}

/** `checkGrant` as the API's errors (`keyDigestHex` undefined: a host that has not joined yet, nothing opens). */
export function requireGrant(keyDigestHex: string | undefined, grant: string, subject: string, now = Date.now()): void {
  const r = keyDigestHex === undefined ? 'invalid' : checkGrant(keyDigestHex, grant, subject, now);
  if (r === 'invalid') throw new NsError('grant_invalid', 'invalid grant: malformed, or not signed with this server\'s key');
  if (r === 'other') {
    const granted = grant.split('.')[0]!;
    const what = (s: string) => (s.startsWith('template:') ? `template ${s.slice('template:'.length)}` : `snapshot ${s}`);
    throw new NsError('grant_forbidden', `the grant is for ${what(granted)}, not ${what(subject)}`, {
      details: granted.startsWith('template:') ? { grantedTemplate: granted.slice('template:'.length) } : { grantedSnapshot: granted },
    });
  }
  if (r === 'expired') {
    const at = Number(grant.split('.')[1]);
    throw new NsError('grant_expired', `the grant expired at ${new Date(at).toISOString()}`, { details: { expiresAtMs: at } });
  }
}
