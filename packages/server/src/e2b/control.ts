import type { FastifyInstance, FastifyReply } from 'fastify';
import { NsError } from '@nullspace/runtime';
import type { SandboxState } from '../sandbox/lifecycle.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { AppDeps } from '../api/deps.js';
import { E2bError, notSupported } from './errors.js';

/**
 * E2B's control plane (the `Sandbox` class's API calls) on the sandbox manager: create
 * (`POST /v2/sandboxes`, and `POST /sandboxes` of older SDKs), connect (= resume), list, get, kill,
 * timeout, pause (= hibernate). Durations are seconds, times RFC 3339, ids nullspace's own.
 */

/** The envd version this surface reports: the SDK gates features on it (docs/api.md). */
export const ENVD_VERSION = '0.5.7';
const CLIENT_ID = 'nullspace';

type Body = Record<string, unknown>;

/** How E2B names a state; ended sandboxes do not exist on this surface (404 everywhere). */
function e2bState(s: SandboxState): 'running' | 'paused' | null {
  if (s === 'creating' || s === 'running' || s === 'resuming') return 'running';
  if (s === 'hibernating' || s === 'paused') return 'paused';
  return null;
}

/** A sandbox that is alive (running or paused), or 404 in E2B's shape. */
export async function liveSandbox(deps: AppDeps, id: string): Promise<SandboxRecord> {
  let rec: SandboxRecord;
  try {
    rec = await deps.sandboxes.get(id);
  } catch {
    throw new E2bError(404, `sandbox ${id} not found`);
  }
  if (e2bState(rec.state) === null) throw new E2bError(404, `sandbox ${id} not found (it is ${rec.state})`);
  return rec;
}

const iso = (ms: number | null | undefined) => new Date(ms ?? Date.now()).toISOString();
const templateOf = (r: SandboxRecord) => r.snapshotId ?? r.template;

function sandboxView(r: SandboxRecord) {
  return {
    sandboxID: r.id,
    templateID: templateOf(r),
    alias: templateOf(r),
    clientID: CLIENT_ID,
    envdVersion: ENVD_VERSION,
    ...(r.accessToken ? { envdAccessToken: r.accessToken } : {}),
    domain: null,
    trafficAccessToken: null,
  };
}

function listedView(r: SandboxRecord) {
  const paused = e2bState(r.state) === 'paused';
  return {
    sandboxID: r.id,
    templateID: templateOf(r),
    alias: templateOf(r),
    clientID: CLIENT_ID,
    startedAt: iso(r.startedAt ?? r.createdAt),
    // paused: when it would end if resumed now (E2B shows the end of its timeout)
    endAt: iso(paused ? Date.now() + (r.remainingMs ?? r.timeoutMs) : r.expiresAt),
    cpuCount: r.vcpus,
    memoryMB: r.memoryMiB,
    diskSizeMB: 0,
    metadata: r.metadata,
    state: e2bState(r.state),
    envdVersion: ENVD_VERSION,
    volumeMounts: r.volumes.map((v) => ({ name: v.name, path: v.path })),
  };
}

function detailView(r: SandboxRecord) {
  return {
    ...listedView(r),
    ...(r.accessToken ? { envdAccessToken: r.accessToken } : {}),
    domain: null,
    allowInternetAccess: r.allowInternetAccess,
    lifecycle: { onTimeout: r.onTimeout === 'hibernate' ? 'pause' : 'kill', autoResume: false },
  };
}

function body(b: unknown): Body {
  if (b === undefined || b === null) return {};
  if (typeof b !== 'object' || Array.isArray(b)) throw new E2bError(400, 'the request body must be a JSON object');
  return b as Body;
}

function stringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new E2bError(400, `${field} must be an object of strings`);
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new E2bError(400, `${field}.${k} must be a string`);
    // (keys become JSON paths of the store's metadata filter)
    if (k === '' || k.length > 256 || /["\\\0]/.test(k)) throw new E2bError(400, `${field}: invalid key ${JSON.stringify(k).slice(0, 80)}`);
  }
  return v as Record<string, string>;
}

/** A timeout in seconds (E2B's unit) as milliseconds, within the server's limit. */
function timeoutMs(deps: AppDeps, v: unknown): number {
  if (v === undefined || v === null) return deps.config.defaultTimeoutMs;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new E2bError(400, 'timeout must be a whole number of seconds');
  const ms = Math.max(1, v) * 1000;
  if (ms > deps.config.limits.maxTimeoutMs) throw new E2bError(400, `timeout ${v} s exceeds the maximum of ${deps.config.limits.maxTimeoutMs / 1000} s`);
  return ms;
}

export function controlRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { sandboxes } = deps;

  const create = async (raw: unknown, reply: FastifyReply) => {
    const b = body(raw);
    const templateID = b.templateID ?? 'base';
    if (typeof templateID !== 'string' || templateID === '') throw new E2bError(400, 'templateID must be a string');
    let volumes: Record<string, string> | undefined;
    if (b.volumeMounts !== undefined && b.volumeMounts !== null) {
      if (!Array.isArray(b.volumeMounts)) throw new E2bError(400, 'volumeMounts must be an array of {name, path}');
      volumes = {};
      for (const m of b.volumeMounts as Array<{ name?: unknown; path?: unknown }>) {
        if (typeof m?.name !== 'string' || typeof m.path !== 'string') throw new E2bError(400, 'volumeMounts must be an array of {name, path}');
        volumes[m.path] = m.name;
      }
    }
    // a snapshot's id names it as a template, as on E2B
    const fromSnapshot = /^snap_/.test(templateID);
    const rec = await sandboxes.create({
      template: fromSnapshot ? 'base' : templateID,
      ...(fromSnapshot ? { snapshotId: templateID } : {}),
      metadata: stringMap(b.metadata, 'metadata'),
      envs: stringMap(b.envVars, 'envVars'),
      timeoutMs: timeoutMs(deps, b.timeout),
      allowInternetAccess: b.allow_internet_access !== false,
      onTimeout: b.autoPause === true ? 'hibernate' : 'kill',
      volumes,
    });
    return reply.status(201).send(sandboxView(rec));
  };
  app.post('/v2/sandboxes', async (req, reply) => create(req.body, reply));
  // (JS SDK <= 2.45, Python SDK 2.x)
  app.post('/sandboxes', async (req, reply) => create(req.body, reply));

  const connect = async (id: string, raw: unknown, reply: FastifyReply) => {
    const b = body(raw);
    if (b.memory === false) throw new E2bError(400, 'connect with memory: false (a reboot from disk) is not supported: a paused sandbox resumes with its memory');
    const ms = timeoutMs(deps, b.timeout);
    const rec = await liveSandbox(deps, id);
    let status = 200;
    let out = rec;
    if (rec.state === 'hibernating' || rec.state === 'paused') {
      out = await sandboxes.resume(id);
      status = 201;
    }
    if (out.state === 'running') {
      // the end moves to now + timeout when that is later (connect never shortens it)
      const left = (out.expiresAt ?? 0) - Date.now();
      if (ms > left) out = await sandboxes.setTimeout(id, ms);
    }
    return reply.status(status).send(sandboxView(out));
  };
  app.post('/v2/sandboxes/:id/connect', async (req, reply) => connect((req.params as { id: string }).id, req.body, reply));
  app.post('/sandboxes/:id/connect', async (req, reply) => connect((req.params as { id: string }).id, req.body, reply));

  app.get('/v2/sandboxes', async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    const states: SandboxState[] = [];
    for (const s of (q.state ?? 'running,paused').split(',')) {
      if (s === 'running') states.push('creating', 'running', 'resuming');
      else if (s === 'paused') states.push('hibernating', 'paused');
      else if (s !== '') throw new E2bError(400, `state must be running and/or paused (got ${JSON.stringify(s).slice(0, 40)})`);
    }
    let limit = 100;
    if (q.limit !== undefined) {
      limit = Number(q.limit);
      if (!/^[0-9]{1,4}$/.test(q.limit) || limit < 1 || limit > 100) throw new E2bError(400, 'limit must be 1 to 100');
    }
    // `metadata` is itself a query string of percent-encoded keys and values (k=v&k2=v2), AND of all
    const metadata: Record<string, string> = {};
    if (q.metadata) {
      for (const [k, v] of new URLSearchParams(q.metadata)) {
        try {
          metadata[decodeURIComponent(k)] = decodeURIComponent(v);
        } catch {
          throw new E2bError(400, 'metadata: bad percent-encoding');
        }
      }
      stringMap(metadata, 'metadata');
    }
    let page: Awaited<ReturnType<typeof sandboxes.list>>;
    try {
      page = await sandboxes.list({ states, metadata, limit, ...(q.nextToken ? { nextToken: q.nextToken } : {}) });
    } catch (err) {
      if (err instanceof NsError && err.code === 'bad_request') throw new E2bError(400, err.message);
      throw err;
    }
    let items = page.items;
    if (q.template) items = items.filter((r) => templateOf(r) === q.template);
    if (q.startedAfter) {
      const after = Date.parse(q.startedAfter);
      if (Number.isNaN(after)) throw new E2bError(400, 'startedAfter must be an RFC 3339 time');
      items = items.filter((r) => (r.startedAt ?? r.createdAt) > after);
    }
    if (page.nextToken) void reply.header('x-next-token', page.nextToken);
    return reply.status(200).send(items.map(listedView));
  });

  app.get('/sandboxes/:id', async (req) => detailView(await liveSandbox(deps, (req.params as { id: string }).id)));

  app.delete('/sandboxes/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    await liveSandbox(deps, id);
    await sandboxes.kill(id);
    return reply.status(204).send();
  });

  app.post('/sandboxes/:id/timeout', async (req, reply) => {
    const { id } = req.params as { id: string };
    const b = body(req.body);
    if (b.timeout === undefined) throw new E2bError(400, 'timeout (seconds) is required');
    const ms = timeoutMs(deps, b.timeout);
    const rec = await liveSandbox(deps, id);
    if (rec.state !== 'running') throw new E2bError(409, `sandbox ${id} is ${rec.state}`);
    await sandboxes.setTimeout(id, ms);
    return reply.status(204).send();
  });

  app.post('/sandboxes/:id/pause', async (req, reply) => {
    const { id } = req.params as { id: string };
    const b = body(req.body);
    if (b.memory === false) throw new E2bError(400, 'pause with memory: false (a filesystem-only pause) is not supported: nullspace keeps the memory');
    const rec = await liveSandbox(deps, id);
    if (e2bState(rec.state) === 'paused') throw new E2bError(409, `sandbox ${id} is already paused`);
    await sandboxes.hibernate(id, 'paused through the E2B API');
    return reply.status(204).send();
  });

  // (getMetrics: no metrics yet; an empty series keeps the SDK's call working)
  app.get('/sandboxes/:id/metrics', async (req) => {
    await liveSandbox(deps, (req.params as { id: string }).id);
    return [];
  });

  // Seams for what is not there yet on this surface: each answers 501 with a message naming it.
  const unsupported: Array<[method: 'post' | 'get' | 'put' | 'delete', url: string, what: string]> = [
    ['post', '/sandboxes/:id/fork', 'fork through the E2B API'],
    ['post', '/sandboxes/:id/snapshots', 'snapshots through the E2B API'],
    ['get', '/snapshots', 'snapshots through the E2B API'],
    ['delete', '/templates/:id', 'deleting snapshots through the E2B API'],
    ['put', '/sandboxes/:id/network', 'updating the network'],
  ];
  for (const [method, url, what] of unsupported) {
    app[method](url, async () => {
      throw notSupported(what);
    });
  }
}
