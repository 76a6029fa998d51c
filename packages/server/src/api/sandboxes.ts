import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { NsError } from '@nullspace/runtime';
import { publicCode } from '../errors.js';
import { STATES, type SandboxState } from '../lifecycle.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { AppDeps } from './app.js';
import { CreateSandboxBody, ForkBody, IdParams, ListSandboxesQuery, ResumeBody, Sandbox, SandboxList, Snapshot, TimeoutBody, type SandboxT } from './schemas.js';
import { snapshotView } from './snapshots.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function sandboxView(r: SandboxRecord): SandboxT {
  return {
    sandboxId: r.id,
    template: r.template,
    snapshotId: r.snapshotId,
    forkedFrom: r.forkedFrom,
    state: r.state,
    metadata: r.metadata,
    memoryMiB: r.memoryMiB,
    vcpus: r.vcpus,
    allowInternetAccess: r.allowInternetAccess,
    timeoutMs: r.timeoutMs,
    createdAt: new Date(r.createdAt).toISOString(),
    startedAt: iso(r.startedAt),
    expiresAt: r.state === 'running' ? iso(r.expiresAt) : null,
    endedAt: iso(r.endedAt),
    endReason: r.endReason,
    // the code of the failure as a client would have got it (an internal code is `internal`)
    errorCode: r.errorCode === null ? null : publicCode(r.errorCode),
    lifecycle: { onTimeout: r.onTimeout },
    volumes: Object.fromEntries(r.volumes.map((v) => [v.path, v.name])),
    pausedAt: iso(r.pausedAt),
    remainingTimeoutMs: r.state === 'paused' ? r.remainingMs : null,
  };
}

const LIVE_STATES: SandboxState[] = ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing'];

/** A comma-separated query value of allowed words (`state=running,paused`), or `fallback` when absent. */
export function parseList<T extends string>(raw: string | undefined, allowed: readonly T[], field: string, fallback: T[]): T[] {
  if (!raw) return fallback;
  const wanted = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (!wanted.length) return fallback; // (`state=,` is no filter word at all: the default, not everything)
  for (const w of wanted) {
    if (!(allowed as readonly string[]).includes(w)) throw new NsError('bad_request', `unknown ${field} "${w}"`, { details: { field } });
  }
  return wanted as T[];
}

export function parseMetadataFilter(raw: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new NsError('bad_request', `metadata filter "${pair}" must be key=value`, { details: { field: 'metadata' } });
    const key = pair.slice(0, eq);
    if (!/^[A-Za-z0-9_.:/-]{1,128}$/.test(key)) throw new NsError('bad_request', `metadata filter key "${key}" is not a metadata key`, { details: { field: 'metadata' } });
    out[key] = pair.slice(eq + 1);
  }
  return out;
}

export function checkTimeout(deps: AppDeps, timeoutMs: number): number {
  if (timeoutMs > deps.config.limits.maxTimeoutMs) {
    throw new NsError('bad_request', `timeoutMs ${timeoutMs} exceeds the maximum of ${deps.config.limits.maxTimeoutMs}`, { details: { field: 'timeoutMs' } });
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
        const rec = await sandboxes.create({
          template: body.template ?? 'base',
          snapshotId: body.snapshotId,
          metadata: body.metadata ?? {},
          envs: body.envs ?? {},
          timeoutMs: checkTimeout(deps, body.timeoutMs ?? deps.config.defaultTimeoutMs),
          allowInternetAccess: body.allowInternetAccess ?? true,
          onTimeout: body.lifecycle?.onTimeout ?? 'kill',
          volumes: body.volumes,
          allowMissingVolumes: body.allowMissingVolumes,
        });
        return reply.status(201).send(sandboxView(rec));
      },
    );

    app.get(
      '/sandboxes',
      { schema: { summary: 'List sandboxes (paginated, oldest first)', querystring: ListSandboxesQuery, response: { 200: SandboxList } } },
      async (req) => {
        const q = req.query as Static<typeof ListSandboxesQuery>;
        const states = parseList(q.state, STATES, 'state', LIVE_STATES);
        const page = sandboxes.list({ states, metadata: parseMetadataFilter(q.metadata), limit: q.limit ?? 100, ...(q.nextToken ? { nextToken: q.nextToken } : {}) });
        return { sandboxes: page.items.map(sandboxView), nextToken: page.nextToken ?? null };
      },
    );

    app.get('/sandboxes/:id', { schema: { summary: 'Get a sandbox', params: IdParams, response: { 200: Sandbox } } }, async (req) =>
      sandboxView(sandboxes.get(req.params.id)),
    );

    app.delete('/sandboxes/:id', { schema: { summary: 'Kill a sandbox (idempotent)', params: IdParams } }, async (req, reply) => {
      await sandboxes.kill(req.params.id);
      return reply.status(204).send();
    });

    app.post(
      '/sandboxes/:id/fork',
      {
        schema: {
          summary: 'Fork a running sandbox: a new running sandbox with its memory and disk as of now; the source keeps running',
          params: IdParams,
          body: Type.Optional(ForkBody),
          response: { 201: Sandbox },
        },
      },
      async (req, reply) => {
        const b = req.body ?? {};
        const timeoutMs = b.timeoutMs === undefined ? undefined : checkTimeout(deps, b.timeoutMs);
        const { child, pauseMs } = await sandboxes.fork(req.params.id, { metadata: b.metadata, envs: b.envs, timeoutMs });
        if (pauseMs !== null) void reply.header('x-nullspace-pause-ms', String(pauseMs));
        return reply.status(201).send(sandboxView(child));
      },
    );

    for (const route of ['/sandboxes/:id/hibernate', '/sandboxes/:id/pause']) {
      app.post(
        route,
        {
          schema: {
            summary: `${route.endsWith('pause') ? '(alias of hibernate) ' : ''}Hibernate: persist memory and disk, stop the VM; the sandbox is paused until resumed`,
            params: IdParams,
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
      async (req) => sandboxView(await sandboxes.resume(req.params.id, req.body?.snapshotId)),
    );

    app.post(
      '/sandboxes/:id/timeout',
      { schema: { summary: 'Set the timeout, counted from now', params: IdParams, body: TimeoutBody, response: { 200: Sandbox } } },
      async (req) => sandboxView(sandboxes.setTimeout(req.params.id, checkTimeout(deps, req.body.timeoutMs))),
    );
  };
