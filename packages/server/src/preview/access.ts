import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { NsError } from '@nullspace/runtime';

/**
 * Who may reach a sandbox's preview URLs: a request carries the sandbox's traffic token (header),
 * or a signed URL made with it, or the cookie a signed URL set; a sandbox created with
 * allowPublicTraffic needs none. A signed URL is
 * `?ns_token=<base64url HMAC-SHA256(token, "<sandboxId>:<port>:<expires>")>&expires=<unix seconds>`:
 * the SDKs make it from the token without asking the server, and it opens one port of one sandbox
 * until it expires. The token itself never leaves the API (a browser gets a signature, never it).
 */

/** The header (as Node gives it: lowercase); written as TOKEN_HEADER_NAME in messages. */
export const TOKEN_HEADER = 'x-nullspace-traffic-token';
const TOKEN_HEADER_NAME = 'X-Nullspace-Traffic-Token';
/** E2B's name of the same header (its SDK's `sandbox.trafficAccessToken`, on the E2B-compatible surface). */
export const E2B_TOKEN_HEADER = 'e2b-traffic-access-token';
export const TOKEN_PARAM = 'ns_token';
export const EXPIRES_PARAM = 'expires';
export const COOKIE = 'ns_traffic';

/** The signature of a signed URL (the SDKs compute the same). */
export function sign(token: string, sandboxId: string, port: number, expires: number): string {
  return createHmac('sha256', token).update(`${sandboxId}:${port}:${expires}`).digest('base64url');
}

function same(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

/** Checks a signature and its expiry; an expired one is `signed_url_expired`, a wrong one `traffic_token_invalid`. */
function checkSigned(token: string, sandboxId: string, port: number, sig: string, expiresRaw: string, what: string): void {
  if (!/^[0-9]{1,12}$/.test(expiresRaw)) throw new NsError('traffic_token_invalid', `${what}: expires must be unix seconds`);
  const expires = Number(expiresRaw);
  if (!same(sig, sign(token, sandboxId, port, expires))) throw new NsError('traffic_token_invalid', `${what}: the signature does not match this sandbox and port`);
  if (expires * 1000 < Date.now()) {
    throw new NsError('signed_url_expired', `${what} expired at ${new Date(expires * 1000).toISOString()}: ask for a new signed URL`, { details: { expiredAt: new Date(expires * 1000).toISOString() } });
  }
}

function cookieValue(req: IncomingMessage): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The Cookie header without ours (the guest's server does not see it); undefined when nothing is left. */
export function cookiesForGuest(header: string): string | undefined {
  const kept = header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p && !p.startsWith(`${COOKIE}=`));
  return kept.length ? kept.join('; ') : undefined;
}

export interface Access {
  /** A browser that opened a signed URL: set this cookie and send it to `location` (the clean URL). */
  redirect?: { location: string; cookie: string };
  /** The request's path and query as the guest gets it (the signed URL's parameters taken out). */
  path: string;
}

export interface AccessTarget {
  id: string;
  port: number;
  trafficToken: string;
  allowPublicTraffic: boolean;
}

/**
 * Whether `req` may reach `target`. Throws `traffic_token_missing` (401), `traffic_token_invalid`
 * (403) or `signed_url_expired` (403).
 */
export function checkAccess(req: IncomingMessage, target: AccessTarget, secure: boolean): Access {
  const url = new URL(req.url ?? '/', 'http://x');
  const sig = url.searchParams.get(TOKEN_PARAM);
  const expires = url.searchParams.get(EXPIRES_PARAM);
  let path = req.url ?? '/';
  if (sig !== null) {
    url.searchParams.delete(TOKEN_PARAM);
    url.searchParams.delete(EXPIRES_PARAM);
    path = url.pathname + (url.searchParams.size ? `?${url.searchParams.toString()}` : '');
  }
  if (target.allowPublicTraffic) return { path };
  const header = req.headers[TOKEN_HEADER] ?? req.headers[E2B_TOKEN_HEADER];
  if (typeof header === 'string') {
    if (!same(header, target.trafficToken)) throw new NsError('traffic_token_invalid', `the ${TOKEN_HEADER_NAME} (or e2b-traffic-access-token) header is not this sandbox's traffic token`);
    return { path };
  }
  if (sig !== null) {
    checkSigned(target.trafficToken, target.id, target.port, sig, expires ?? '', 'the signed URL');
    const accept = req.headers.accept ?? '';
    // a browser's navigation: a cookie for this host, and the clean URL (API clients are served at once)
    if ((req.method === 'GET' || req.method === 'HEAD') && accept.includes('text/html')) {
      const maxAge = Math.max(1, Number(expires) - Math.floor(Date.now() / 1000));
      const cookie = `${COOKIE}=${expires}.${sig}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
      return { redirect: { location: path, cookie }, path };
    }
    return { path };
  }
  const cookie = cookieValue(req);
  if (cookie !== undefined) {
    const dot = cookie.indexOf('.');
    checkSigned(target.trafficToken, target.id, target.port, cookie.slice(dot + 1), dot > 0 ? cookie.slice(0, dot) : '', 'the access cookie');
    return { path };
  }
  throw new NsError(
    'traffic_token_missing',
    `this sandbox's ports need its traffic token: send the ${TOKEN_HEADER_NAME} header (sandbox.trafficAccessToken), or open a signed URL (sandbox.getSignedUrl(port)); or create the sandbox with network.allowPublicTraffic`,
  );
}
