import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from './deps.js';

export const systemRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (app) => {
    app.get(
      '/health',
      {
        schema: {
          summary: 'Server status',
          response: {
            200: Type.Object({
              ok: Type.Boolean(),
              version: Type.String(),
              accel: Type.String(),
              accelReason: Type.String(),
              cpuModel: Type.String(),
              qemuVersion: Type.String(),
              reflink: Type.Boolean(),
              running: Type.Integer(),
              memoryMiB: Type.Integer(),
              warmPool: Type.Object(
                { size: Type.Integer(), ready: Type.Integer(), preparing: Type.Integer() },
                { description: 'sandboxes of `base` prepared ahead of demand (NULLSPACE_WARM_POOL)' },
              ),
              snapshotPool: Type.Object(
                {
                  size: Type.Integer({ description: 'how many snapshots are kept warm at most' }),
                  ready: Type.Integer(),
                  preparing: Type.Integer(),
                  snapshots: Type.Array(Type.String(), { description: 'the snapshots kept warm, most recently used first' }),
                },
                { description: 'sandboxes-to-be restored ahead of demand from recently created or used reusable snapshots (NULLSPACE_SNAPSHOT_POOL)' },
              ),
            }),
          },
        },
      },
      async () => ({
        ok: true,
        version: deps.version,
        accel: deps.host.profile.accel,
        accelReason: deps.host.accelReason,
        cpuModel: deps.host.profile.cpuModel,
        qemuVersion: deps.host.profile.qemuVersion,
        reflink: deps.host.reflink,
        running: deps.sandboxes.usage.sandboxes,
        memoryMiB: deps.sandboxes.usage.memoryMiB,
        warmPool: deps.sandboxes.warmPool,
        snapshotPool: deps.sandboxes.snapshotPool,
      }),
    );
  };
