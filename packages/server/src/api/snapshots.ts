import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { SnapshotKind, SnapshotRecord } from '../store/snapshots.js';
import { allPages } from '../util.js';
import type { AppDeps } from './deps.js';
import { parseList, parseMetadataFilter } from './query.js';
import { Compatibility, CreateSnapshotBody, EmptyBody, GcReport, IdParams, ListSnapshotsQuery, Sandbox, Snapshot, SnapshotParams } from './schemas.js';
import { sandboxView, snapshotView } from './views.js';

const KINDS: SnapshotKind[] = ['reusable', 'hibernate', 'fork'];

export const snapshotRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes, gc } = deps;

    const view = (s: SnapshotRecord) => snapshotView(deps, s);

    app.post(
      '/sandboxes/:id/snapshots',
      {
        schema: {
          summary: 'Create a reusable snapshot of a running sandbox (memory + disk at one instant; the sandbox keeps running)',
          params: IdParams,
          body: Type.Optional(CreateSnapshotBody),
          response: { 201: Snapshot },
        },
      },
      async (req, reply) => {
        const snap = await sandboxes.snapshot(req.params.id, { kind: 'reusable', metadata: req.body?.metadata ?? {} });
        return reply.status(201).send(await view(snap));
      },
    );

    // a fleet collects on every host: each frees what nothing on it references (a snapshot deleted
    // through the control plane is deleted on every host holding a copy)
    const fleetGc = async (dryRun: boolean) => {
      const local = await gc.run(dryRun);
      return deps.router?.active ? ((await deps.router.gcAll(dryRun, local as unknown as Record<string, unknown>)) as unknown as typeof local) : local;
    };

    app.get(
      '/snapshots',
      { schema: { summary: 'List snapshots (paginated, oldest first)', querystring: ListSnapshotsQuery, response: { 200: Type.Object({ snapshots: Type.Array(Snapshot), nextToken: Type.Union([Type.String(), Type.Null()]) }) } } },
      async (req) => {
        const q = req.query;
        const kinds = parseList(q.kind, KINDS, 'kind', ['reusable', 'hibernate']);
        const query = { sandboxId: q.sandboxId, kinds, metadata: parseMetadataFilter(q.metadata) };
        if (deps.router?.active) {
          // the fleet's snapshots: this host's and each joined host's (a copy held twice is listed once)
          const local = await Promise.all((await allPages((token) => sandboxes.listSnapshots({ ...query, limit: 1000, nextToken: token }))).map(view));
          return (await deps.router.listSnapshots(req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '', local, q.limit ?? 100, q.nextToken)) as unknown as { snapshots: typeof local; nextToken: string | null };
        }
        const page = await sandboxes.listSnapshots({ ...query, limit: q.limit ?? 100, nextToken: q.nextToken });
        return { snapshots: await Promise.all(page.items.map(view)), nextToken: page.nextToken ?? null };
      },
    );

    app.get('/snapshots/:id', { schema: { summary: 'Get a snapshot', params: SnapshotParams, response: { 200: Snapshot } } }, async (req) =>
      view(await sandboxes.getSnapshot(req.params.id)),
    );

    app.delete(
      '/snapshots/:id',
      { schema: { summary: 'Delete a snapshot (its storage is freed once nothing uses it)', params: SnapshotParams } },
      async (req, reply) => {
        await sandboxes.deleteSnapshot(req.params.id);
        return reply.status(204).send();
      },
    );

    app.post(
      '/snapshots/:id/resume',
      {
        schema: {
          summary: "Resume the snapshot's sandbox (same id) from it: it must be that sandbox's latest hibernation snapshot",
          params: SnapshotParams,
          body: Type.Optional(EmptyBody),
          response: { 200: Sandbox },
        },
      },
      async (req) => {
        const snap = await sandboxes.getSnapshot(req.params.id);
        return sandboxView(deps, await sandboxes.resume(snap.sandboxId, snap.id));
      },
    );

    app.get(
      '/snapshots/:id/compatibility',
      { schema: { summary: 'Can this host restore the snapshot? If not, which requirements differ', params: SnapshotParams, response: { 200: Compatibility } } },
      async (req) => {
        const snap = await sandboxes.getSnapshot(req.params.id);
        const c = sandboxes.compatibility(snap);
        const hosts = await deps.fleet.compatibility(snap.requirements, snap.vmConfig);
        return { snapshotId: snap.id, compatible: c.compatible, mismatches: c.mismatches, requirements: { ...snap.requirements }, hosts };
      },
    );

    app.get(
      '/gc',
      { schema: { summary: 'Garbage collection dry run: what would be freed, and what holds the rest', response: { 200: GcReport } } },
      async () => fleetGc(true),
    );
    app.post('/gc', { schema: { summary: 'Run garbage collection now', body: Type.Optional(EmptyBody), response: { 200: GcReport } } }, async () => fleetGc(false));
  };
