import path from 'node:path';
import { E2bError } from './errors.js';

/**
 * E2B's user conventions, on this surface only (the native /v1 API keeps root and /workspace): the
 * default user is `user` (uid 1000 in the base image, home /home/user), commands start in the
 * user's home, and relative and `~` paths resolve against it.
 */
export const DEFAULT_USER = 'user';

/** A Unix user name as useradd takes it (no path tricks, no shell characters). */
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

export function homeOf(user: string): string {
  return user === 'root' ? '/root' : `/home/${user}`;
}

function checkUser(name: string): string {
  if (!USER_RE.test(name)) throw new E2bError(401, `invalid user ${JSON.stringify(name).slice(0, 80)}`);
  return name;
}

/** The user of an RPC: `Authorization: Basic base64("name:")`, else the default. */
export function rpcUser(authorization: string | undefined): string {
  const m = /^Basic\s+(\S+)$/i.exec(authorization ?? '');
  if (!m?.[1]) return DEFAULT_USER;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const name = decoded.split(':')[0] ?? '';
  return name ? checkUser(name) : DEFAULT_USER;
}

/** The user of a `/files` request: `?username=`, else the default. */
export function filesUser(username: unknown): string {
  return typeof username === 'string' && username !== '' ? checkUser(username) : DEFAULT_USER;
}

/** An absolute guest path: `~`, `~/x` and relative paths against the user's home; `.`/`..` folded. */
export function resolvePath(p: unknown, user: string, field = 'path'): string {
  if (typeof p !== 'string' || p === '' || p.includes('\0') || Buffer.byteLength(p) > 4096) {
    throw new E2bError(400, `${field} must be a non-empty path (got ${JSON.stringify(p)?.slice(0, 100)})`);
  }
  const home = homeOf(user);
  const rel = p === '~' ? home : p.startsWith('~/') ? path.posix.join(home, p.slice(2)) : p;
  return path.posix.resolve(home, rel);
}

/** Quotes a word for the guest's shell (`'...'`, an inner `'` as `'\''`). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
