import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FleetRouter } from '../fleet/router.js';

/**
 * The API's hook that hands a request about a sandbox or a snapshot of a joined host to the fleet
 * router (after the API key was checked): it is answered by that host, streamed both ways.
 */
export function fleetRouting(router: FleetRouter, localHas: (snapshotId: string) => Promise<boolean>) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!router.active) return;
    const route = req.routeOptions.url ?? '';
    const kind = route.startsWith('/v1/sandboxes/:id') ? 'sandbox' : route.startsWith('/v1/snapshots/:id') ? 'snapshot' : route === '/v1/volumes/:name' ? 'volume' : undefined;
    const params = req.params as { id?: unknown; name?: unknown } | undefined;
    const id = kind === 'volume' ? params?.name : params?.id;
    if (!kind || typeof id !== 'string') return;
    // (hijacked only once it is known to be remote: a local one goes on through Fastify; a snapshot
    // a host made on its own, a hibernation at a timeout, is looked for on the hosts)
    let copies = await router.placed(kind, id);
    if (!copies.length && kind === 'snapshot' && !(await localHas(id)) && (await router.discoverSnapshot(id))) copies = await router.placed(kind, id);
    if (!copies.length) return;
    reply.hijack();
    await router.forward(kind, copies, route, req.raw, reply.raw);
  };
}
