import type { FastifyInstance, FastifyReply } from 'fastify';
import { NsError } from '@nullspace/runtime';
import type { SandboxState } from '../sandbox/lifecycle.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { AppDeps } from '../api/deps.js';
import { E2bError, notSupported } from './errors.js';
import { hostsListed, mergedPage, NAME_KEY, placeE2b, placedSnapshot } from './fleet.js';
import { allPages } from '../util.js';
import { e2bEgressRules } from './network.js';

/**
 * E2B's control plane (the `Sandbox` class's API calls) on the sandbox manager: create
 * (`POST /v2/sandboxes`, and `POST /sandboxes` of older SDKs), connect (= resume), list, get, kill,
 * timeout, pause (= hibernate), metrics (the sampler's), snapshots (reusable snapshots: E2B's name
 * is kept in the snapshot's metadata as `e2bName`), fork (N-way fork). Durations are seconds, times
 * RFC 3339, ids nullspace's own. `domain` is the preview proxy's (getHost(port) reaches the guest's
 * port through it); ports are public unless the sandbox was created with
 * `network.allowPublicTraffic: false`, as on E2B (then `trafficAccessToken` opens them).
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

function sandboxView(deps: AppDeps, r: SandboxRecord) {
  return {
    sandboxID: r.id,
    templateID: templateOf(r),
    alias: templateOf(r),
    clientID: CLIENT_ID,
    envdVersion: ENVD_VERSION,
    ...(r.accessToken ? { envdAccessToken: r.accessToken } : {}),
    domain: deps.preview.publicDomain,
    trafficAccessToken: r.allowPublicTraffic ? null : r.trafficToken,
  };
}

/** The size of its root file system as the guest sees it (its latest metrics sample; 0 before the first). */
function diskSizeMB(deps: AppDeps, r: SandboxRecord): number {
  const last = deps.sandboxes.latestSample(r.id);
  return last ? Math.round(last.diskTotalBytes / (1024 * 1024)) : 0;
}

function listedView(deps: AppDeps, r: SandboxRecord) {
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
    diskSizeMB: diskSizeMB(deps, r),
    metadata: r.metadata,
    state: e2bState(r.state),
    envdVersion: ENVD_VERSION,
    volumeMounts: r.volumes.map((v) => ({ name: v.name, path: v.path })),
  };
}

function detailView(deps: AppDeps, r: SandboxRecord) {
  return {
    ...listedView(deps, r),
    ...(r.accessToken ? { envdAccessToken: r.accessToken } : {}),
    domain: deps.preview.publicDomain,
    allowInternetAccess: r.allowInternetAccess,
    network: { allowPublicTraffic: r.allowPublicTraffic },
    lifecycle: { onTimeout: r.onTimeout === 'hibernate' ? 'pause' : 'kill', autoResume: r.autoResume },
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

/** A page's `limit` (default and most: 100). */
function pageLimit(raw: string | undefined): number {
  if (raw === undefined) return 100;
  const limit = Number(raw);
  if (!/^[0-9]{1,4}$/.test(raw) || limit < 1 || limit > 100) throw new E2bError(400, 'limit must be 1 to 100');
  return limit;
}

export function controlRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { sandboxes } = deps;

  /** The newest reusable snapshot with this E2B name. */
  const namedSnapshot = async (name: string) => (await sandboxes.listSnapshots({ kinds: ['reusable'], metadata: { [NAME_KEY]: name }, limit: 100 })).items.at(-1);
  const snapshotView = (snap: SnapshotRecord) => ({ snapshotID: snap.id, names: snap.metadata[NAME_KEY] ? [snap.metadata[NAME_KEY]] : [] });

  const create = async (raw: unknown, path: string, reply: FastifyReply) => {
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
    const network = (b.network ?? {}) as { allowPublicTraffic?: unknown };
    if (typeof network !== 'object' || (network.allowPublicTraffic !== undefined && typeof network.allowPublicTraffic !== 'boolean')) {
      throw new E2bError(400, 'network.allowPublicTraffic must be a boolean');
    }
    const egress = e2bEgressRules(network as Record<string, unknown>);
    const autoResume = (b.autoResume ?? {}) as { enabled?: unknown };
    // a snapshot's id or name names it as a template, as on E2B (the control plane's own, or one
    // placed on a joined host)
    const router = deps.router?.active ? deps.router : undefined;
    const snapshotId = /^snap_/.test(templateID) ? templateID : ((await namedSnapshot(templateID))?.id ?? (router ? (await placedSnapshot(router, templateID))[0]?.id : undefined));
    if (router) {
      // placed as a /v1 create is: a joined host's own E2B surface creates it (fleet.ts)
      const answer = await placeE2b(router, { template: snapshotId ? 'base' : templateID, ...(snapshotId ? { snapshotId } : {}), ...(volumes ? { volumes } : {}) }, path, { ...b, ...(snapshotId ? { templateID: snapshotId } : {}) });
      if (answer !== undefined) return reply.status(201).send(answer);
    }
    const rec = await sandboxes.create({
      template: snapshotId ? 'base' : templateID,
      ...(snapshotId ? { snapshotId } : {}),
      metadata: stringMap(b.metadata, 'metadata'),
      envs: stringMap(b.envVars, 'envVars'),
      timeoutMs: timeoutMs(deps, b.timeout),
      allowInternetAccess: b.allow_internet_access !== false,
      onTimeout: b.autoPause === true ? 'hibernate' : 'kill',
      autoResume: b.autoPause === true && autoResume.enabled === true,
      // (E2B's ports are public unless the sandbox restricts them)
      allowPublicTraffic: network.allowPublicTraffic !== false,
      volumes,
      ...(egress ? { egress } : {}),
    });
    return reply.status(201).send(sandboxView(deps, rec));
  };
  app.post('/v2/sandboxes', async (req, reply) => create(req.body, '/v2/sandboxes', reply));
  // (JS SDK <= 2.45, Python SDK 2.x)
  app.post('/sandboxes', async (req, reply) => create(req.body, '/sandboxes', reply));

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
    return reply.status(status).send(sandboxView(deps, out));
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
    const limit = pageLimit(q.limit);
    // (nullspace's list is oldest first, whatever the page: a newest-first order is refused, not ignored)
    if (q.order !== undefined && q.order !== 'asc') throw new E2bError(400, `order ${JSON.stringify(q.order).slice(0, 40)} is not supported: nullspace lists sandboxes oldest first (order=asc)`);
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
    const after = q.startedAfter ? Date.parse(q.startedAfter) : undefined;
    if (after !== undefined && Number.isNaN(after)) throw new E2bError(400, 'startedAfter must be an RFC 3339 time');
    const wanted = (items: SandboxRecord[]) => items.filter((r) => (!q.template || templateOf(r) === q.template) && (after === undefined || (r.startedAt ?? r.createdAt) > after));
    if (deps.router?.active) {
      // the control plane's own and every ready host's (their E2B lists, same query), under one cursor
      const local = await allPages((token) => sandboxes.list({ states, metadata, limit: 500, ...(token ? { nextToken: token } : {}) }));
      const all = [...wanted(local).map((r) => listedView(deps, r) as Record<string, unknown>), ...(await hostsListed(deps.router, '/v2/sandboxes', q))];
      const merged = mergedPage(all, 'sandboxID', (j) => Date.parse(String(j.startedAt)), limit, q.nextToken || undefined);
      if (merged.nextToken) void reply.header('x-next-token', merged.nextToken);
      return reply.status(200).send(merged.items);
    }
    let page: Awaited<ReturnType<typeof sandboxes.list>>;
    try {
      page = await sandboxes.list({ states, metadata, limit, ...(q.nextToken ? { nextToken: q.nextToken } : {}) });
    } catch (err) {
      if (err instanceof NsError && err.code === 'bad_request') throw new E2bError(400, err.message);
      throw err;
    }
    if (page.nextToken) void reply.header('x-next-token', page.nextToken);
    return reply.status(200).send(wanted(page.items).map((r) => listedView(deps, r)));
  });

  app.get('/sandboxes/:id', async (req) => detailView(deps, await liveSandbox(deps, (req.params as { id: string }).id)));

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

  // getMetrics: the sampler's series (start/end in unix seconds)
  app.get('/sandboxes/:id/metrics', async (req) => {
    const { id } = req.params as { id: string };
    await liveSandbox(deps, id);
    const q = req.query as Record<string, string | undefined>;
    const bound = (v: string | undefined, field: string) => {
      if (v === undefined || v === '') return undefined;
      if (!/^[0-9]{1,12}$/.test(v)) throw new E2bError(400, `${field} must be unix seconds`);
      return Number(v) * 1000;
    };
    const start = bound(q.start, 'start');
    const end = bound(q.end, 'end');
    if (start !== undefined && end !== undefined && start > end) throw new E2bError(400, 'start is after end');
    // (E2B's end is the second of the last sample: a sample within that second is in)
    return (await sandboxes.metrics(id, start, end === undefined ? undefined : end + 999)).map((m) => ({
      timestamp: new Date(m.at).toISOString(),
      timestampUnix: Math.floor(m.at / 1000),
      cpuCount: m.cpuCount,
      cpuUsedPct: m.cpuUsedPct,
      memUsed: m.memUsedBytes,
      memTotal: m.memTotalBytes,
      memCache: 0,
      diskUsed: m.diskUsedBytes,
      diskTotal: m.diskTotalBytes,
    }));
  });

  // snapshots: nullspace's reusable snapshots (the sandbox keeps running, as on E2B)
  app.post('/sandboxes/:id/snapshots', async (req, reply) => {
    const { id } = req.params as { id: string };
    const b = body(req.body);
    if (b.name !== undefined && (typeof b.name !== 'string' || b.name === '' || b.name.length > 256)) throw new E2bError(400, 'name must be a string of 1 to 256 characters');
    if (typeof b.name === 'string' && (await namedSnapshot(b.name))) throw new E2bError(409, `a snapshot named ${JSON.stringify(b.name)} exists`);
    const rec = await liveSandbox(deps, id);
    if (rec.state !== 'running') throw new E2bError(409, `sandbox ${id} is ${rec.state}: only a running sandbox can be snapshotted (connect resumes it)`);
    const snap = await sandboxes.snapshot(id, { kind: 'reusable', metadata: typeof b.name === 'string' ? { [NAME_KEY]: b.name } : {} });
    return reply.status(201).send(snapshotView(snap));
  });

  app.get('/snapshots', async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    const limit = pageLimit(q.limit);
    if (deps.router?.active) {
      // the control plane's own and those placed on joined hosts (their records), under one cursor
      const own = await allPages((token) => sandboxes.listSnapshots({ kinds: ['reusable'], ...(q.sandboxID ? { sandboxId: q.sandboxID } : {}), metadata: q.name ? { [NAME_KEY]: q.name } : {}, limit: 500, nextToken: token }));
      const mine: Array<Record<string, unknown>> = own.map((x) => ({ ...snapshotView(x), at: x.createdAt }));
      for (const p of await deps.router.placedAll('snapshot')) {
        const v = p.view as { kind?: string; sandboxId?: string; metadata?: Record<string, string>; createdAt?: string };
        if (v.kind !== 'reusable' || (q.sandboxID && v.sandboxId !== q.sandboxID) || (q.name && v.metadata?.[NAME_KEY] !== q.name)) continue;
        mine.push({ snapshotID: p.id, names: v.metadata?.[NAME_KEY] ? [v.metadata[NAME_KEY]] : [], at: Date.parse(String(v.createdAt)) });
      }
      const merged = mergedPage(mine, 'snapshotID', (j) => Number(j.at), limit, q.nextToken || undefined);
      if (merged.nextToken) void reply.header('x-next-token', merged.nextToken);
      return reply.status(200).send(merged.items.map(({ at: _at, ...x }) => x));
    }
    let page: Awaited<ReturnType<typeof sandboxes.listSnapshots>>;
    try {
      page = await sandboxes.listSnapshots({ kinds: ['reusable'], ...(q.sandboxID ? { sandboxId: q.sandboxID } : {}), metadata: q.name ? { [NAME_KEY]: q.name } : {}, limit, nextToken: q.nextToken || undefined });
    } catch (err) {
      if (err instanceof NsError && err.code === 'bad_request') throw new E2bError(400, err.message);
      throw err;
    }
    if (page.nextToken) void reply.header('x-next-token', page.nextToken);
    return reply.status(200).send(page.items.map(snapshotView));
  });

  // deleteSnapshot (E2B deletes snapshots as templates): a snapshot's id or name; 404 for anything else
  app.delete('/templates/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    let snap: SnapshotRecord | undefined;
    try {
      snap = /^snap_/.test(id) ? await sandboxes.getSnapshot(id) : await namedSnapshot(id);
    } catch {
      // (not found)
    }
    if (!snap && deps.router?.active) {
      const copies = await placedSnapshot(deps.router, id);
      if (copies.length && copies[0]!.view.kind === 'reusable') {
        await deps.router.deleteSnapshot(copies);
        return reply.status(204).send();
      }
    }
    if (!snap || snap.kind !== 'reusable') throw new E2bError(404, `snapshot ${id} not found (templates are managed through /v1/templates)`);
    await sandboxes.deleteSnapshot(snap.id);
    return reply.status(204).send();
  });

  // fork: N children from one capture; nullspace's fork is all or nothing (one failure fails the request)
  app.post('/sandboxes/:id/fork', async (req, reply) => {
    const { id } = req.params as { id: string };
    const b = body(req.body);
    if (b.count !== undefined && b.count !== null && (typeof b.count !== 'number' || !Number.isInteger(b.count))) throw new E2bError(400, 'count must be a whole number');
    const rec = await liveSandbox(deps, id);
    if (rec.state !== 'running') throw new E2bError(409, `sandbox ${id} is ${rec.state}: only a running sandbox can be forked (connect resumes it)`);
    let children: SandboxRecord[];
    try {
      ({ children } = await sandboxes.fork(id, { timeoutMs: b.timeout === undefined || b.timeout === null ? undefined : timeoutMs(deps, b.timeout), count: (b.count as number | undefined) ?? 1 }));
    } catch (err) {
      if (err instanceof NsError && err.code === 'validation_failed') throw new E2bError(400, err.message);
      throw err;
    }
    return reply.status(201).send(children.map((c) => ({ sandbox: sandboxView(deps, c) })));
  });

  // updateNetwork: E2B's egress rules as nullspace's (e2bEgressRules); the rules given replace the
  // sandbox's; internet access is fixed at create
  app.put('/sandboxes/:id/network', async (req, reply) => {
    const { id } = req.params as { id: string };
    const b = body(req.body);
    const rec = await liveSandbox(deps, id);
    if (b.allow_internet_access !== undefined && b.allow_internet_access !== rec.allowInternetAccess) {
      throw notSupported('changing allow_internet_access of a running sandbox');
    }
    await sandboxes.updateNetwork(id, e2bEgressRules(b) ?? { allowOut: [], denyOut: [] });
    return reply.status(204).send();
  });
}
