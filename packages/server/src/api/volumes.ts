import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { VolumeRecord } from '../store/volumes.js';
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
    });

    app.post(
      '/volumes',
      { schema: { summary: 'Create a shared volume (durable storage mounted into sandboxes, never copied into snapshots)', body: CreateVolumeBody, response: { 201: Volume } } },
      async (req, reply) => reply.status(201).send(await view(await volumes.create(req.body.name))),
    );
    app.get('/volumes', { schema: { summary: 'List volumes', response: { 200: Type.Object({ volumes: Type.Array(Volume) }) } } }, async () => ({
      volumes: await Promise.all((await volumes.list()).map(view)),
    }));
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
