import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { bearer } from '../fleet/credentials.js';
import type { AppDeps } from './deps.js';

/**
 * The fleet (docs/ARCHITECTURE.md "Fleet"): `/v1/hosts` for operators (the API key), and
 * `/v1/fleet/*` for runtime hosts, which present the join token or their own credential instead
 * (routes marked `config.fleet`: the API key hook leaves them to the fleet service).
 */
export function isFleetRoute(req: FastifyRequest): boolean {
  return (req.routeOptions.config as { fleet?: unknown } | undefined)?.fleet === true;
}

const Str = Type.String({ maxLength: 1024 });
const Count = Type.Integer({ minimum: 0, maximum: 2 ** 40 });

const Fingerprint = Type.Object(
  {
    qemuVersion: Str,
    machine: Str,
    accel: Str,
    cpuModel: Str,
    hostCpu: Str,
    deviceSet: Str,
    hostKernel: Str,
    templates: Type.Array(
      Type.Object({ name: Str, version: Count, key: Str, kernelRelease: Str, agentVersion: Str, compatible: Type.Boolean() }, { additionalProperties: false }),
      { maxItems: 1000 },
    ),
  },
  { additionalProperties: false, description: 'What a memory snapshot needs from a host, as this host offers it (the fields the compatibility check compares), plus its kernel and templates' },
);
const Capacity = Type.Object(
  { memoryMiB: Count, availableMemoryMiB: Count, vcpus: Count, diskMiB: Count, freeDiskMiB: Count },
  { additionalProperties: false },
);
const Counts = Type.Object({ sandboxes: Count }, { additionalProperties: false });
const HostState = Type.Union([Type.Literal('ready'), Type.Literal('draining'), Type.Literal('lost')]);

const Host = Type.Object({
  hostId: Type.String(),
  state: HostState,
  url: Type.Union([Type.String(), Type.Null()]),
  fingerprint: Fingerprint,
  capacity: Capacity,
  counts: Counts,
  epoch: Type.Integer(),
  joinedAt: Type.String(),
  lastHeartbeat: Type.String(),
  lostAt: Type.Union([Type.String(), Type.Null()]),
  fencedAt: Type.Union([Type.String(), Type.Null()]),
});

const Report = {
  url: Type.String({ pattern: '^https?://[^/?#@]+$', maxLength: 300 }),
  fingerprint: Fingerprint,
  capacity: Capacity,
  counts: Counts,
};
const JoinBody = Type.Object({ ...Report, controlCredential: Type.String({ minLength: 32, maxLength: 256 }) }, { additionalProperties: false });
const HeartbeatBody = Type.Object(Report, { additionalProperties: false });
const HostParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const hostRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { fleet } = deps;

    app.get('/hosts', { schema: { summary: 'List runtime hosts (the control plane\'s own is "local")', response: { 200: Type.Object({ hosts: Type.Array(Host) }) } } }, async () => ({
      hosts: await fleet.list(),
    }));
    app.get('/hosts/:id', { schema: { summary: 'Get a runtime host', params: HostParams, response: { 200: Host } } }, async (req) => fleet.get(req.params.id));
    app.post(
      '/hosts/:id/drain',
      { schema: { summary: 'Stop placing sandboxes on a host (its sandboxes run on)', params: HostParams, response: { 200: Host } } },
      async (req) => fleet.drain(req.params.id),
    );
    app.post(
      '/hosts/:id/undrain',
      { schema: { summary: 'Place sandboxes on a drained host again', params: HostParams, response: { 200: Host } } },
      async (req) => fleet.drain(req.params.id, false),
    );

    // runtime hosts: the join token, then their own credential (not the API key)
    app.post(
      '/fleet/join',
      {
        config: { fleet: true },
        onRequest: async (req) => fleet.checkJoinToken(bearer(req.headers.authorization)),
        schema: {
          // (the hosts' protocol, not the clients' API: documented in docs/api.md "Hosts", left out
          // of the OpenAPI document that clients and the API fuzzer read)
          hide: true,
          summary: 'A runtime host joins (Authorization: Bearer <join token>)',
          body: JoinBody,
          response: { 201: Type.Object({ hostId: Type.String(), credential: Type.String(), heartbeatMs: Type.Integer() }) },
        },
      },
      async (req, reply) => reply.status(201).send(await fleet.join(bearer(req.headers.authorization), req.body)),
    );
    app.post(
      '/fleet/hosts/:id/heartbeat',
      {
        config: { fleet: true },
        onRequest: async (req) => {
          await fleet.checkHost((req.params as { id: string }).id, bearer(req.headers.authorization));
        },
        schema: {
          hide: true,
          summary: "A runtime host's heartbeat (Authorization: Bearer <host credential>)",
          params: HostParams,
          body: HeartbeatBody,
          response: { 200: Type.Object({ state: HostState, epoch: Type.Integer(), heartbeatMs: Type.Integer() }) },
        },
      },
      async (req) => fleet.heartbeat(req.params.id, bearer(req.headers.authorization), req.body),
    );
  };
