import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { NsError } from '@nullspace/runtime';
import { STATES, type SandboxState } from '../sandbox/lifecycle.js';
import { allPages } from '../util.js';
import type { AppDeps } from './deps.js';
import { parseList, parseMetadataFilter } from './query.js';
import {
  CreateSandboxBody,
  EmptyBody,
  ForkBody,
  ForkResult,
  IdParams,
  ListSandboxesQuery,
  NetworkRules,
  NetworkRulesBody,
  ResumeBody,
  Sandbox,
  type SandboxT,
  SandboxList,
  Snapshot,
  TimeoutBody,
} from './schemas.js';
import { sandboxView, snapshotView } from './views.js';

const LIVE_STATES: SandboxState[] = ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing'];

export function checkTimeout(deps: AppDeps, timeoutMs: number): number {
  if (timeoutMs > deps.config.limits.maxTimeoutMs) {
    throw new NsError('validation_failed', `timeoutMs ${timeoutMs} exceeds the maximum of ${deps.config.limits.maxTimeoutMs}`, { details: { field: 'timeoutMs' } });
  }
  return timeoutMs;
}

export const sandboxRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes } = deps;

    app.post(
      '/sandboxes',
      { schema: { summary: 'Create a sandbox from a template', body: CreateSandboxBody, response: { 201: Sandbox } } },
      async (req, reply) => {
        const body = req.body ?? {};
        if (body.template !== undefined && body.snapshotId !== undefined) {
          throw new NsError('bad_request', 'give either template or snapshotId, not both', { details: { field: 'snapshotId' } });
        }
        const net = body.network;
        // (checked and normalized by the manager)
        const egress = net && (net.allowOut !== undefined || net.denyOut !== undefined) ? { allowOut: net.allowOut ?? [], denyOut: net.denyOut ?? [] } : undefined;
        checkTimeout(deps, body.timeoutMs ?? deps.config.defaultTimeoutMs);
        // a fleet: placed on a joined host, unless the control plane's own host takes it (fleet/router.ts)
        const placed = deps.router ? await deps.router.create(body as Record<string, unknown>) : undefined;
        if (placed) return reply.status(201).send(placed as unknown as SandboxT);
        const rec = await sandboxes.create({
          template: body.template ?? 'base',
          snapshotId: body.snapshotId,
          metadata: body.metadata ?? {},
          envs: body.envs ?? {},
          timeoutMs: checkTimeout(deps, body.timeoutMs ?? deps.config.defaultTimeoutMs),
          allowInternetAccess: body.allowInternetAccess ?? true,
          onTimeout: body.lifecycle?.onTimeout ?? 'kill',
          autoResume: body.lifecycle?.autoResume ?? false,
          allowPublicTraffic: body.network?.allowPublicTraffic ?? false,
          egress,
          volumes: body.volumes,
          allowMissingVolumes: body.allowMissingVolumes,
        });
        return reply.status(201).send(sandboxView(deps, rec));
      },
    );

    app.get(
      '/sandboxes',
      { schema: { summary: 'List sandboxes (paginated, oldest first)', querystring: ListSandboxesQuery, response: { 200: SandboxList } } },
      async (req) => {
        const q = req.query as Static<typeof ListSandboxesQuery>;
        const states = parseList(q.state, STATES, 'state', LIVE_STATES);
        const metadata = parseMetadataFilter(q.metadata);
        if (deps.router?.active) {
          // the fleet's sandboxes: this host's, each joined host's, and the records of lost hosts' ones
          const local = (await allPages((token) => sandboxes.list({ states, metadata, limit: 1000, ...(token ? { nextToken: token } : {}) }))).map((r) => sandboxView(deps, r));
          const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
          return (await deps.router.listSandboxes(query, local, states, q.limit ?? 100, q.nextToken)) as unknown as { sandboxes: typeof local; nextToken: string | null };
        }
        const page = await sandboxes.list({ states, metadata, limit: q.limit ?? 100, ...(q.nextToken ? { nextToken: q.nextToken } : {}) });
        return { sandboxes: page.items.map((r) => sandboxView(deps, r)), nextToken: page.nextToken ?? null };
      },
    );

    app.get('/sandboxes/:id', { schema: { summary: 'Get a sandbox', params: IdParams, response: { 200: Sandbox } } }, async (req) =>
      sandboxView(deps, await sandboxes.get(req.params.id)),
    );

    app.get(
      '/sandboxes/:id/network',
      { schema: { summary: "A sandbox's egress rules and the connections they refused", params: IdParams, response: { 200: NetworkRules } } },
      async (req) => sandboxes.network(req.params.id),
    );

    app.put(
      '/sandboxes/:id/network',
      {
        schema: {
          summary: "Replace a sandbox's egress rules (effective at once for new connections)",
          params: IdParams,
          body: Type.Optional(NetworkRulesBody),
          response: { 200: NetworkRules },
        },
      },
      async (req) => sandboxes.updateNetwork(req.params.id, { allowOut: req.body?.allowOut ?? [], denyOut: req.body?.denyOut ?? [] }),
    );

    app.delete('/sandboxes/:id', { schema: { summary: 'Kill a sandbox (idempotent)', params: IdParams } }, async (req, reply) => {
      await sandboxes.kill(req.params.id);
      return reply.status(204).send();
    });

    app.post(
      '/sandboxes/:id/fork',
      {
        schema: {
          summary:
            'Fork a running sandbox: new running sandboxes (one, or `count`) with its memory and disk as of now, from one capture; the source keeps running',
          params: IdParams,
          body: Type.Optional(ForkBody),
          response: { 201: Type.Union([Sandbox, ForkResult]) },
        },
      },
      async (req, reply) => {
        const b = req.body ?? {};
        const timeoutMs = b.timeoutMs === undefined ? undefined : checkTimeout(deps, b.timeoutMs);
        const { children, pauseMs } = await sandboxes.fork(req.params.id, { metadata: b.metadata, envs: b.envs, timeoutMs, count: b.count });
        if (pauseMs !== null) void reply.header('x-nullspace-pause-ms', String(pauseMs));
        // without count: the child itself (the answer of a fork before counts existed)
        if (b.count === undefined) return reply.status(201).send(sandboxView(deps, children[0]!));
        return reply.status(201).send({ sandboxes: children.map((c) => sandboxView(deps, c)), pauseMs });
      },
    );

    for (const route of ['/sandboxes/:id/hibernate', '/sandboxes/:id/pause']) {
      app.post(
        route,
        {
          schema: {
            summary: `${route.endsWith('pause') ? '(alias of hibernate) ' : ''}Hibernate: persist memory and disk, stop the VM; the sandbox is paused until resumed`,
            params: IdParams,
            body: Type.Optional(EmptyBody),
            response: { 200: Snapshot },
          },
        },
        async (req) => snapshotView(deps, await sandboxes.hibernate(req.params.id)),
      );
    }

    app.post(
      '/sandboxes/:id/resume',
      {
        schema: {
          summary: 'Resume a paused sandbox (same id) from its latest hibernation; a running sandbox is returned as is',
          params: IdParams,
          body: Type.Optional(ResumeBody),
          response: { 200: Sandbox },
        },
      },
      async (req) => sandboxView(deps, await sandboxes.resume(req.params.id, req.body?.snapshotId)),
    );

    app.post(
      '/sandboxes/:id/timeout',
      { schema: { summary: 'Set the timeout, counted from now', params: IdParams, body: TimeoutBody, response: { 200: Sandbox } } },
      async (req) => sandboxView(deps, await sandboxes.setTimeout(req.params.id, checkTimeout(deps, req.body.timeoutMs))),
    );
  };
