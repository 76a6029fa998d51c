import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { VolumeRecord } from '../store/volumes.js';
import { LOCAL_HOST_ID } from '../fleet/service.js';
import type { AppDeps } from './deps.js';
import { CreateVolumeBody, Volume, VolumeParams } from './schemas.js';

export const volumeRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { volumes } = deps;
    const view = async (v: VolumeRecord) => ({
      name: v.name,
      volumeId: v.id,
      createdAt: new Date(v.createdAt).toISOString(),
      sizeBytes: volumes.sizeBytes(v),
      mountedBy: (await volumes.users(v)).map((u) => u.id),
      hostId: LOCAL_HOST_ID,
    });
    type View = Awaited<ReturnType<typeof view>>;

    app.post(
      '/volumes',
      { schema: { summary: 'Create a shared volume (durable storage mounted into sandboxes, never copied into snapshots)', body: CreateVolumeBody, response: { 201: Volume } } },
      async (req, reply) => {
        // a fleet: the volume lives on a joined host (fleet/router.ts), unless the control plane's own takes it
        const placed = deps.router ? await deps.router.createVolume(req.body.name, async () => (await volumes.get(req.body.name).then(() => true, () => false))) : undefined;
        if (placed) return reply.status(201).send(placed as unknown as View);
        return reply.status(201).send(await view(await volumes.create(req.body.name)));
      },
    );
    app.get('/volumes', { schema: { summary: 'List volumes', response: { 200: Type.Object({ volumes: Type.Array(Volume) }) } } }, async () => {
      const local = await Promise.all((await volumes.list()).map(view));
      return { volumes: deps.router?.active ? ((await deps.router.listVolumes(local)) as unknown as View[]) : local };
    });
    app.get('/volumes/:name', { schema: { summary: 'Get a volume', params: VolumeParams, response: { 200: Volume } } }, async (req) =>
      view(await volumes.get(req.params.name)),
    );
    app.delete(
      '/volumes/:name',
      { schema: { summary: 'Delete a volume and its data (409 volume_in_use while a sandbox mounts it)', params: VolumeParams } },
      async (req, reply) => {
        await volumes.delete(req.params.name);
        return reply.status(204).send();
      },
    );
  };
