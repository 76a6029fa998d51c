import type { FastifyReply, FastifyRequest } from 'fastify';
import { NsError } from '@nullspace/runtime';
import { callHost, forwardTraffic, hostError, type HostTarget } from '../fleet/forward.js';
import { showHost, type FleetRouter } from '../fleet/router.js';
export { mergedPage } from '../fleet/router.js';
import type { PlacementRecord } from '../store/placements.js';
import type { AppDeps } from '../api/deps.js';
import { signatureOwner } from './envd.js';
import { allPages } from '../util.js';
import { E2bError } from './errors.js';

/**
 * The E2B surface on a fleet's control plane (docs/ARCHITECTURE.md "Fleet", "E2B over a fleet"):
 * a runtime host serves the same E2B surface for its own sandboxes (behind its control credential),
 * and the control plane hands it every E2B request about a sandbox placed there:
 * - envd's (`E2b-Sandbox-Id`: files, processes, watches, health) forwarded as they came, streamed
 *   both ways, the client's Authorization and access token untouched (the host checks the token),
 *   the control plane's credential in CONTROL_HEADER (forward.ts `forwardTraffic`);
 * - the control routes of one sandbox (get, kill, timeout, pause, connect, metrics, network,
 *   snapshot, fork) as JSON calls, whose answers are recorded where they make something (a fork's
 *   children, a snapshot) or end it (a kill);
 * - creates placed as /v1 creates are (router `place`), then created by the host's E2B route;
 * - lists merged over the control plane's own sandboxes and the ready hosts' (a lost host's
 *   sandboxes are not listed: E2B has no state for them).
 */

type Json = Record<string, unknown>;
/** E2B's name of a snapshot, kept in its metadata (control.ts). */
export const NAME_KEY = 'e2bName';

/** The control-route patterns about one sandbox that its host answers. */
function sandboxRoute(route: string): boolean {
  return route.startsWith('/sandboxes/:id') || route.startsWith('/v2/sandboxes/:id');
}

/**
 * The host of placed sandbox `id`, or undefined when the control plane runs it itself (or knows
 * nothing of it: its own routes answer 404). A killed one is not found, as on E2B.
 */
async function placedHost(router: FleetRouter, id: string): Promise<HostTarget | undefined> {
  try {
    return await router.liveHostOf(id);
  } catch (err) {
    if (err instanceof NsError && err.code === 'sandbox_ended') throw new E2bError(404, `sandbox ${id} not found (it was killed)`);
    throw err;
  }
}

/**
 * preHandler of the control routes: a request about a sandbox of a joined host is answered by
 * that host's E2B surface (bodies are small JSON: sent on parsed).
 */
export function forwardControl(router: FleetRouter) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (!router.active) return undefined;
    const route = req.routeOptions.url ?? '';
    const id = (req.params as { id?: unknown } | undefined)?.id;
    if (!sandboxRoute(route) || typeof id !== 'string') return undefined;
    let host: HostTarget | undefined;
    try {
      host = await placedHost(router, id);
    } catch (err) {
      // a kill while its host is lost: recorded now, done by the host when it is back (reconciled)
      if (req.method === 'DELETE' && route === '/sandboxes/:id' && err instanceof NsError && err.code === 'host_unavailable') {
        await router.ended(id);
        return reply.status(204).send();
      }
      throw err;
    }
    if (!host) return undefined;
    const path = req.url;
    const r = await callHost(host, req.method, path, req.method === 'GET' || req.method === 'DELETE' ? undefined : (req.body ?? {}));
    if (r.status === 204 && req.method === 'DELETE') await router.ended(id);
    if (r.status === 201 && route === '/sandboxes/:id/fork') {
      for (const c of r.json as Array<{ sandbox: { sandboxID: string } }>) await router.recordMade('sandbox', host, c.sandbox.sandboxID);
    }
    if (r.status === 201 && route === '/sandboxes/:id/snapshots') await router.recordMade('snapshot', host, String((r.json as Json).snapshotID), id);
    if (r.json === undefined) return reply.status(r.status).send();
    return reply.status(r.status).type('application/json').send(r.json);
  };
}

/** The route of a joined host's E2B surface that says whose signature a signed URL carries. */
export const SIGNATURE_OWNER_ROUTE = '/nullspace/e2b/signature-owner';

/**
 * The sandbox of a joined host whose token signs this signed `/files` URL (E2B's uploadUrl and
 * downloadUrl name no sandbox with E2B_SANDBOX_URL): the control plane's own are looked at first
 * (undefined: its own, or nobody's, which its route answers), then each ready host is asked.
 */
async function signedOnHost(deps: AppDeps, router: FleetRouter, req: FastifyRequest): Promise<string | undefined> {
  const q = req.query as Record<string, unknown>;
  if (req.routeOptions.url !== '/files' || typeof q.signature !== 'string' || req.headers['x-access-token'] !== undefined) return undefined;
  const operation = req.method === 'GET' ? 'read' : 'write';
  if (await signatureOwner(deps, q, operation)) return undefined;
  for (const host of await router.liveHosts()) {
    const r = await callHost(host, 'POST', SIGNATURE_OWNER_ROUTE, { query: q, operation }).catch(() => undefined);
    if (r?.status === 401) throw new E2bError(401, String((r.json as Json | undefined)?.message ?? 'invalid signature'));
    const id = r?.status === 200 ? (r.json as { sandboxId?: unknown }).sandboxId : undefined;
    if (typeof id === 'string') return id;
  }
  return undefined;
}

/** onRequest of the envd routes: a request for a sandbox of a joined host goes there as it came. */
export function forwardEnvd(deps: AppDeps, router: FleetRouter) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (!router.active) return undefined;
    let id = req.headers['e2b-sandbox-id'];
    if (typeof id !== 'string') {
      id = await signedOnHost(deps, router, req);
      if (id === undefined) return undefined;
      // (named for the host, which then checks the signature against that sandbox only)
      req.raw.headers['e2b-sandbox-id'] = id;
    }
    let host: HostTarget | undefined;
    try {
      host = await placedHost(router, id);
    } catch (err) {
      // (envd's answer for a sandbox that is not there: E2B's proxy's 502, which the SDK reads as "not running")
      if (err instanceof E2bError && err.status === 404) throw new E2bError(502, 'The sandbox was not found', { sandboxId: id });
      throw err;
    }
    if (!host) return undefined;
    reply.hijack();
    await forwardTraffic(req.raw, reply.raw, host);
    return reply;
  };
}

/**
 * Creates a sandbox on the host placement picks (`want`: template, snapshotId, volumes), by the
 * host's own E2B create with the request's body; its answer. Undefined: the control plane's own
 * host takes it.
 */
export async function placeE2b(router: FleetRouter, want: Json, path: string, body: unknown): Promise<unknown> {
  const placed = await router.place(want, {
    send: (host) => callHost(host, 'POST', path, body),
    view: async (host, answer) => {
      const id = String((answer as Json).sandboxID);
      const r = await callHost(host, 'GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
      if (r.status !== 200) throw hostError(host, r.status, r.json);
      return showHost(r.json, host.id) as Json;
    },
    // the host's E2B answer as it gave it; for want of room (429, 503, 507) the next host is tried
    refusal: (_host, status, answer) => ({ error: new E2bError(status, String((answer as Json | undefined)?.message ?? `the host answered ${status}`)), full: [429, 503, 507].includes(status) }),
  });
  return placed?.answer;
}

/** The placed copies of reusable snapshot `idOrName` (E2B names a snapshot by its id or its name; the newest of a name). */
export async function placedSnapshot(router: FleetRouter, idOrName: string): Promise<PlacementRecord[]> {
  if (/^snap_/.test(idOrName)) return router.placed('snapshot', idOrName);
  const named = (await router.placedAll('snapshot')).filter((p) => p.view.kind === 'reusable' && (p.view.metadata as Json | undefined)?.[NAME_KEY] === idOrName);
  const newest = named.sort((a, b) => String(a.view.createdAt).localeCompare(String(b.view.createdAt))).at(-1);
  return newest ? named.filter((p) => p.id === newest.id) : [];
}

/** Every item of an E2B list on each ready host (their pages followed; a host that does not answer is left out). */
export async function hostsListed(router: FleetRouter, path: string, query: Record<string, string | undefined>): Promise<Json[]> {
  const out: Json[] = [];
  for (const host of await router.liveHosts()) {
    out.push(
      ...(await allPages(async (token) => {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(query)) if (v !== undefined && k !== 'nextToken' && k !== 'limit') q.set(k, v);
        q.set('limit', '100');
        if (token) q.set('nextToken', token);
        const r = await callHost(host, 'GET', `${path}?${q.toString()}`).catch(() => undefined);
        if (!r || r.status !== 200 || !Array.isArray(r.json)) return { items: [] };
        return { items: r.json as Json[], nextToken: r.headers.get('x-next-token') };
      })),
    );
  }
  return out;
}
