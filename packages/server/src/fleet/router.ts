import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { NsError, type RestoreRequirements } from '@nullspace/runtime';
import type { Logger } from '../log.js';
import type { PreviewTarget, RemoteTraffic } from '../preview/proxy.js';
import type { HostRecord, HostStore } from '../store/hosts.js';
import type { PlacementKind, PlacementRecord, PlacementStore } from '../store/placements.js';
import { decodeCursor, encodeCursor } from '../store/cursor.js';
import { allPages } from '../util.js';
import { snapshotGrant, templateGrant } from './grant.js';
import { secretDigest } from './credentials.js';
import { callHost, forwardApi, forwardTraffic, forwardUpgrade, hostError, hostUnavailable, type HostTarget } from './forward.js';
import { LOCAL_HOST_ID, type FleetService, type HostView } from './service.js';

type Json = Record<string, unknown>;

export interface RouterOptions {
  /** The control plane runs sandboxes itself too (`local` is a placement candidate). */
  localSandboxes: boolean;
  /** Hosts that keep a copy of each reusable snapshot (1: the one that took it). */
  replicas: number;
  /** How many sandboxes the control plane's own host runs now. */
  localLoad: () => number;
  /** The control plane's API key (grants for what hosts fetch from it are keyed by its digest). */
  apiKey: string;
  /** Whether the control plane's own host has snapshot `id`. */
  localHas: (id: string) => Promise<boolean>;
}

/**
 * How the chosen host is asked to create a sandbox: `send` the request (201: created), `view` the
 * sandbox's /v1 view from the answer (what the placement records).
 */
export interface CreateAsk {
  send(host: HostTarget): Promise<{ status: number; json: unknown }>;
  view(host: HostTarget, answer: unknown): Promise<Json>;
  /** The host's refusal as the error to answer, and whether it was for want of room (the next candidate is tried). */
  refusal(host: HostTarget, status: number, answer: unknown): { error: Error; full: boolean };
}

const V1_CREATE = (body: Json): CreateAsk => ({
  send: (host) => callHost(host, 'POST', '/v1/sandboxes', body),
  view: async (host, answer) => showHost(answer, host.id) as Json,
  refusal: (host, status, answer) => {
    const error = hostError(host, status, answer);
    return { error, full: FULL.has(error.code) };
  },
});

/** Codes with which a host refuses a sandbox for want of room: the next candidate is tried. */
const FULL = new Set(['too_many_sandboxes', 'insufficient_memory', 'no_space']);
const GRANT_TTL_MS = 10 * 60_000;

/** What the control plane keeps of a snapshot placed on hosts: its view, what restoring it needs. */
interface SnapshotInfo extends Json {
  requirements: RestoreRequirements;
  vm: { memoryMiB: number; vcpus: number };
}

/**
 * The control plane's side of the fleet's data path (docs/ARCHITECTURE.md "Fleet"): where a new
 * sandbox goes (placement), which host answers a request about a sandbox or a snapshot (routing,
 * streamed by forward.ts), the lists merged over hosts, snapshot copies moved and replicated, the
 * records of a lost host shown as such, a returning host reconciled with the records.
 */
export class FleetRouter implements RemoteTraffic {
  constructor(
    private readonly hosts: HostStore,
    private readonly placements: PlacementStore,
    private readonly fleet: FleetService,
    private readonly opts: RouterOptions,
    private readonly log: Logger,
  ) {}

  get active(): boolean {
    return this.fleet.enabled;
  }

  // --- routing ---------------------------------------------------------------------------------

  /** Where `kind` `id` is placed on joined hosts (none: it is the control plane's own, or unknown). */
  async placed(kind: PlacementKind, id: string): Promise<PlacementRecord[]> {
    return this.active ? this.placements.of(kind, id) : [];
  }

  /**
   * Answers an API request about the sandbox, snapshot or volume placed as `copies` (what `placed`
   * gave: one lookup per request); `route` is the route's pattern (`/v1/sandboxes/:id/files`, ...).
   */
  async forward(kind: PlacementKind, copies: PlacementRecord[], route: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!copies.length) throw new NsError('internal', `forward of a ${kind} placed nowhere`);
    if (kind === 'volume') await this.forwardVolume(copies[0]!, req, res);
    else if (kind === 'sandbox') await this.forwardSandbox(copies[0]!, route, req, res);
    else await this.forwardSnapshot(copies, route, req, res);
  }

  private async forwardVolume(p: PlacementRecord, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const rec = await this.hosts.get(p.hostId);
    if (!rec || rec.lostAt !== null) return answer(res, 503, errorBody(lostError(p.hostId, `volume ${p.id}`)));
    const host = target(rec);
    await forwardApi(req, res, host, async (status, body) => {
      if (status === 204 && req.method === 'DELETE') await this.placements.remove('volume', p.id);
      return showHost(body, host.id);
    });
    return true;
  }

  /**
   * Creates volume `name` on a ready joined host (undefined: the control plane's own host takes it).
   * Names are unique over the fleet; sandboxes that mount it are placed on its host.
   */
  async createVolume(name: string, existsLocally: () => Promise<boolean>): Promise<Json | undefined> {
    if (!this.active) return undefined;
    const taken = () => new NsError('already_exists', `volume ${name} already exists`, { details: { name } });
    if ((await this.placements.of('volume', name)).length || (await existsLocally())) throw taken();
    const candidates = await this.placeable();
    if (this.opts.localSandboxes) candidates.push(this.localCandidate());
    if (!candidates.length) throw new NsError('host_unavailable', 'no runtime host is ready (GET /v1/hosts)');
    candidates.sort((a, b) => a.load - b.load || a.id.localeCompare(b.id));
    const c = candidates[0]!;
    if (c.id === LOCAL_HOST_ID) return undefined;
    const r = await callHost(c.target!, 'POST', '/v1/volumes', { name });
    if (r.status !== 201) throw hostError(c.target!, r.status, r.json);
    const view = showHost(r.json, c.id) as Json;
    await this.placements.put('volume', name, c.id, view);
    return view;
  }

  /** `GET /v1/volumes` over the fleet (a lost host's volumes from the records). */
  async listVolumes(local: Json[]): Promise<Json[]> {
    const all = [...local];
    const seen = new Set(all.map((v) => String(v.name)));
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null) continue;
      const r = await callHost(target(rec), 'GET', '/v1/volumes').catch(() => undefined);
      if (r?.status !== 200) continue;
      for (const v of (r.json as { volumes: Json[] }).volumes) {
        seen.add(String(v.name));
        all.push(showHost(v, rec.id) as Json);
      }
    }
    for (const p of await this.placements.list('volume')) if (!seen.has(p.id)) all.push({ ...p.view, hostId: p.hostId });
    return all.sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)) || String(a.name).localeCompare(String(b.name)));
  }

  private async forwardSandbox(p: PlacementRecord, route: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const method = req.method ?? 'GET';
    const rec = await this.hosts.get(p.hostId);
    const whole = route === '/v1/sandboxes/:id';
    if (p.endedAt !== null || !rec || rec.lostAt !== null) {
      // the control plane's record answers: the host is lost (or the sandbox was killed meanwhile)
      if (whole && method === 'DELETE') {
        if (p.endedAt === null) {
          await this.placements.end('sandbox', p.id);
          this.log.warn({ sandboxId: p.id, hostId: p.hostId }, 'sandbox killed while its host is lost: the host kills it when it comes back');
        }
        return answer(res, 204, undefined);
      }
      if (whole && method === 'GET') return answer(res, 200, this.recordView(p, rec));
      if (p.endedAt !== null) return answer(res, 409, errorBody(new NsError('sandbox_not_running', `sandbox ${p.id} was killed`, { details: { id: p.id, state: 'killed' } })));
      return answer(res, 503, errorBody(lostError(p.hostId, `sandbox ${p.id}`)));
    }
    const host = target(rec);
    await forwardApi(req, res, host, async (status, body) => {
      const out = showHost(body, host.id);
      if (status === 200 && whole && method === 'GET') await this.placements.put('sandbox', p.id, host.id, out as Json);
      if (status === 204 && whole && method === 'DELETE') await this.placements.end('sandbox', p.id);
      if (status === 201 && route === '/v1/sandboxes/:id/fork') {
        const children = Array.isArray((out as Json).sandboxes) ? ((out as Json).sandboxes as Json[]) : [out as Json];
        for (const c of children) await this.placements.put('sandbox', String(c.sandboxId), host.id, c);
      }
      if (status === 201 && route === '/v1/sandboxes/:id/snapshots') await this.recordSnapshot(host, out as Json, p.view);
      if (status === 200 && (route === '/v1/sandboxes/:id/hibernate' || route === '/v1/sandboxes/:id/pause')) await this.recordSnapshot(host, out as Json, p.view);
      return out;
    });
    return true;
  }

  /**
   * Deletes the snapshot placed as `copies` on every ready holder (a lost host's copy is forgotten:
   * its gc frees it once it is back and the snapshot is deleted there by reconciliation).
   */
  async deleteSnapshot(copies: PlacementRecord[]): Promise<void> {
    const id = copies[0]!.id;
    for (const h of await this.readyHolders(copies)) {
      const r = await callHost(h, 'DELETE', `/v1/snapshots/${id}`);
      if (r.status !== 204 && r.status !== 404) throw hostError(h, r.status, r.json);
    }
    await this.placements.remove('snapshot', id);
  }

  private async forwardSnapshot(copies: PlacementRecord[], route: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const id = copies[0]!.id;
    const method = req.method ?? 'GET';
    const ready = await this.readyHolders(copies);
    if (route === '/v1/snapshots/:id' && method === 'DELETE') {
      await this.deleteSnapshot(copies);
      return answer(res, 204, undefined);
    }
    const host = ready[0];
    if (!host) return answer(res, 503, errorBody(lostError(copies.map((c) => c.hostId).join(', '), `every copy of snapshot ${id}`)));
    await forwardApi(req, res, host, async (status, body) => {
      const out = showHost(body, host.id) as Json;
      if (status === 200 && route === '/v1/snapshots/:id/compatibility') {
        const info = await this.infoOf(copies);
        out.hosts = await this.fleet.compatibility(info.requirements, info.vm);
      }
      return out;
    });
    return true;
  }

  async request(req: IncomingMessage, res: ServerResponse, t: PreviewTarget): Promise<boolean> {
    const host = await this.liveHostOf(t.id);
    if (!host) return false;
    await forwardTraffic(req, res, host);
    return true;
  }

  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, t: PreviewTarget): Promise<boolean> {
    const host = await this.liveHostOf(t.id);
    if (!host) return false;
    await forwardUpgrade(req, socket, head, host);
    return true;
  }

  /**
   * Records sandbox or snapshot `id`, made on `host` by a request forwarded as it came (E2B's fork
   * and snapshot: fleet/e2b.ts), from the host's own /v1 view.
   */
  async recordMade(kind: 'sandbox' | 'snapshot', host: HostTarget, id: string, from?: string): Promise<void> {
    const r = await callHost(host, 'GET', `/v1/${kind === 'sandbox' ? 'sandboxes' : 'snapshots'}/${encodeURIComponent(id)}`);
    if (r.status !== 200) throw hostError(host, r.status, r.json);
    const view = showHost(r.json, host.id) as Json;
    if (kind === 'sandbox') await this.placements.put('sandbox', id, host.id, view);
    else await this.recordSnapshot(host, view, from ? (await this.placements.of('sandbox', from))[0]?.view : undefined);
  }

  /** Everything of `kind` placed on joined hosts, with the last view recorded of each. */
  placedAll(kind: PlacementKind): Promise<PlacementRecord[]> {
    return this.active ? this.placements.list(kind) : Promise.resolve([]);
  }

  /** The ready hosts (not lost), as the control plane calls them: what fleet-wide lists ask. */
  async liveHosts(): Promise<HostTarget[]> {
    return (await this.hosts.list()).filter((h) => h.lostAt === null).map(target);
  }

  /** Ends the record of sandbox `id` (its host killed it at a forwarded request). */
  async ended(id: string): Promise<void> {
    await this.placements.end('sandbox', id);
  }

  /** The host of a placed sandbox for preview traffic (undefined: not placed; a lost one throws). */
  async liveHostOf(id: string): Promise<HostTarget | undefined> {
    if (!this.active) return undefined;
    const p = (await this.placements.of('sandbox', id))[0];
    if (!p) return undefined;
    const rec = await this.hosts.get(p.hostId);
    if (p.endedAt !== null) throw new NsError('sandbox_ended', `sandbox ${id} was killed`, { details: { id } });
    if (!rec || rec.lostAt !== null) throw lostError(p.hostId, `sandbox ${id}`);
    return target(rec);
  }

  // --- placement -------------------------------------------------------------------------------

  /**
   * Places a new sandbox (`body`: the create request, validated). Undefined: the control plane's
   * own host takes it (no joined host, a local snapshot, or `local` is the least loaded).
   */
  async create(body: Json): Promise<Json | undefined> {
    const placed = await this.place(body, V1_CREATE(body));
    return placed?.view;
  }

  /**
   * Places a new sandbox described by `want` (`template`, `snapshotId`, `volumes`: a create
   * request's fields that decide where it may go) and asks the chosen host to create it with `ask`
   * (the /v1 create, or E2B's: fleet/e2b.ts). Undefined: the control plane's own host takes it.
   */
  async place(want: Json, ask: CreateAsk): Promise<{ answer: unknown; view: Json } | undefined> {
    if (!this.active) return undefined;
    const snapshotId = typeof want.snapshotId === 'string' ? want.snapshotId : undefined;
    if (snapshotId !== undefined) return this.restore(snapshotId, ask);
    const body = want;
    const template = typeof body.template === 'string' ? body.template : 'base';
    let candidates = await this.placeable();
    const volumeHosts = await this.volumeHosts(body);
    if (volumeHosts) candidates = candidates.filter((c) => volumeHosts.has(c.id));
    else if (this.opts.localSandboxes) candidates.push(this.localCandidate());
    if (!candidates.length) {
      if (volumeHosts) throw new NsError('host_unavailable', `the host of the sandbox's volumes is not ready (${[...volumeHosts].join(', ')})`, { details: { hostIds: [...volumeHosts] } });
      throw new NsError('host_unavailable', 'no runtime host is ready (GET /v1/hosts)');
    }
    // hosts that hold the template first, then the least loaded
    const holds = (c: Candidate) => (c.view?.fingerprint.templates ?? []).some((t) => t.name === template && t.compatible) || c.id === LOCAL_HOST_ID;
    candidates.sort((a, b) => Number(holds(b)) - Number(holds(a)) || a.load - b.load || a.id.localeCompare(b.id));
    // none that may take it holds it: the first is given a copy from a ready host that has it
    if (!holds(candidates[0]!)) await this.copyTemplate(template, candidates[0]!);
    return this.createOn(candidates, ask);
  }

  /**
   * Copies template `name` onto candidate `to` from a ready host holding it (fleet/templates.ts: its
   * files, digest-checked, fetched straight from that host with a grant for this template). None
   * holds it: nothing to copy (the host answers the create: `template_not_found`, or builds `base`).
   */
  private async copyTemplate(name: string, to: Candidate): Promise<void> {
    if (!to.target) return;
    const holders = (await this.fleet.list()).filter((h) => h.hostId !== to.id && h.state !== 'lost' && h.fingerprint.templates.some((t) => t.name === name && t.compatible));
    // another host first; else the control plane itself (where `POST /v1/templates` builds): the
    // host fetches it from the control plane at the URL it knows it by, with a grant of its key
    const host = holders.find((h) => h.url);
    const rec = host ? await this.hosts.get(host.hostId) : undefined;
    const source = rec ? { id: rec.id, url: rec.url, keyDigest: secretDigest(rec.controlCredential) } : holders.some((h) => h.hostId === LOCAL_HOST_ID) ? { id: LOCAL_HOST_ID, url: 'control', keyDigest: secretDigest(this.opts.apiKey) } : undefined;
    if (!source) return;
    const grant = templateGrant(source.keyDigest, name, GRANT_TTL_MS);
    const r = await callHost(to.target, 'POST', '/v1/artifacts/templates/import', { name, source: source.url, grant }, 30 * 60_000);
    if (r.status !== 200) throw hostError(to.target, r.status, r.json);
    this.log.info({ template: name, from: source.id, to: to.id, ...(r.json as Json) }, 'template copied');
  }

  private async restore(snapshotId: string, ask: CreateAsk): Promise<{ answer: unknown; view: Json } | undefined> {
    let copies = await this.placements.of('snapshot', snapshotId);
    // a snapshot of the control plane's own host is restored there
    if (!copies.length && ((await this.opts.localHas(snapshotId)) || !(await this.discoverSnapshot(snapshotId)))) return undefined;
    copies = await this.placements.of('snapshot', snapshotId);
    const info = await this.infoOf(copies);
    const compat = await this.fleet.compatibility(info.requirements, info.vm);
    const ok = new Set(compat.filter((c) => c.compatible && c.state === 'ready' && c.hostId !== LOCAL_HOST_ID).map((c) => c.hostId));
    const candidates = (await this.placeable()).filter((c) => ok.has(c.id));
    if (!candidates.length) {
      throw new NsError('no_compatible_host', `no ready host can restore snapshot ${snapshotId}: ${compat.map((c) => `${c.hostId} (${c.state}${c.mismatches.length ? `: ${c.mismatches.map((m) => m.field).join(', ')}` : ''})`).join('; ')}`, {
        details: { snapshotId, hosts: compat },
      });
    }
    const holders = new Set(copies.map((c) => c.hostId));
    candidates.sort((a, b) => Number(holders.has(b.id)) - Number(holders.has(a.id)) || a.load - b.load || a.id.localeCompare(b.id));
    const chosen = candidates[0]!;
    if (!holders.has(chosen.id)) await this.copySnapshot(snapshotId, copies, chosen.target!);
    return this.createOn([chosen], ask);
  }

  private async createOn(candidates: Candidate[], ask: CreateAsk): Promise<{ answer: unknown; view: Json } | undefined> {
    let last: Error | undefined;
    for (const c of candidates) {
      if (c.id === LOCAL_HOST_ID) return undefined;
      const host = c.target!;
      let r: { status: number; json: unknown };
      try {
        r = await ask.send(host);
      } catch (err) {
        // (unreachable: the next candidate)
        last = err as Error;
        continue;
      }
      if (r.status === 201) {
        const view = await ask.view(host, r.json);
        await this.placements.put('sandbox', String(view.sandboxId), host.id, view);
        this.log.info({ sandboxId: view.sandboxId, hostId: host.id }, 'sandbox placed');
        return { answer: r.json, view };
      }
      const refused = ask.refusal(host, r.status, r.json);
      if (!refused.full) throw refused.error;
      last = refused.error;
      this.log.warn({ hostId: host.id, status: r.status, err: refused.error.message }, 'placement: host refused the sandbox, trying the next');
    }
    throw last ?? new NsError('host_unavailable', 'no runtime host is ready');
  }

  /**
   * Copies snapshot `id` onto `to` from a ready host holding it: the target fetches only the layers
   * it lacks, digest-checked (fleet/artifacts.ts), with a grant good for this snapshot only.
   */
  async copySnapshot(id: string, copies: PlacementRecord[], to: HostTarget): Promise<Json> {
    const from = (await this.readyHolders(copies)).find((h) => h.id !== to.id);
    if (!from) throw new NsError('snapshot_unavailable', `every copy of snapshot ${id} is on a lost host (${copies.map((c) => c.hostId).join(', ')})`, { details: { snapshotId: id, hostIds: copies.map((c) => c.hostId) } });
    const grant = snapshotGrant(secretDigest(from.credential), id, GRANT_TTL_MS);
    const r = await callHost(to, 'POST', '/v1/artifacts/import', { snapshotId: id, source: from.url, grant }, 30 * 60_000);
    if (r.status !== 200) throw hostError(to, r.status, r.json);
    await this.placements.put('snapshot', id, to.id, copies[0]!.view);
    this.log.info({ snapshotId: id, from: from.id, to: to.id, ...(r.json as Json) }, 'snapshot copied');
    return r.json as Json;
  }

  /** A snapshot taken on `host`: recorded with what restoring it needs, then replicated. */
  private async recordSnapshot(host: HostTarget, view: Json, source: Json | undefined): Promise<void> {
    const id = String(view.snapshotId);
    const info = await this.snapshotInfo(host, view, source).catch((err: unknown) => {
      // (recorded without: what restoring it needs is asked again when it is restored)
      this.log.warn({ snapshotId: id, hostId: host.id, err: (err as Error).message }, 'recording a snapshot without its requirements');
      return view;
    });
    await this.placements.put('snapshot', id, host.id, info);
    if (this.opts.replicas > 1 && view.kind === 'reusable') void this.replicate(id).catch((err: unknown) => this.log.error({ snapshotId: id, err: (err as Error).message }, 'replicating a snapshot failed'));
  }

  /** A snapshot's view with what restoring it needs: its requirements (from its host) and VM shape. */
  private async snapshotInfo(host: HostTarget, view: Json, source: Json | undefined): Promise<SnapshotInfo> {
    const id = String(view.snapshotId);
    const c = await callHost(host, 'GET', `/v1/snapshots/${id}/compatibility`);
    if (c.status !== 200) throw hostError(host, c.status, c.json);
    const requirements = (c.json as { requirements: RestoreRequirements }).requirements as RestoreRequirements & { memoryMiB?: number; vcpus?: number };
    const vm = { memoryMiB: Number(source?.memoryMiB ?? requirements.memoryMiB), vcpus: Number(source?.vcpus ?? requirements.vcpus) };
    return { ...view, requirements, vm };
  }

  /** What restoring snapshot `id` needs, from its records (asked of a holder when they lack it). */
  private async infoOf(copies: PlacementRecord[]): Promise<SnapshotInfo> {
    const recorded = copies.find((c) => (c.view as Partial<SnapshotInfo>).requirements)?.view as SnapshotInfo | undefined;
    if (recorded) return recorded;
    const holder = (await this.readyHolders(copies))[0];
    if (!holder) throw new NsError('snapshot_unavailable', `every copy of snapshot ${copies[0]!.id} is on a lost host`, { details: { snapshotId: copies[0]!.id, hostIds: copies.map((c) => c.hostId) } });
    const info = await this.snapshotInfo(holder, copies[0]!.view, undefined);
    for (const c of copies) await this.placements.put('snapshot', c.id, c.hostId, info);
    return info;
  }

  /**
   * Finds snapshot `id` on the ready hosts when the records do not place it (a hibernation a host
   * made on its own, at a sandbox's timeout) and records where it is; false: no host has it.
   */
  async discoverSnapshot(id: string): Promise<boolean> {
    if (!this.active) return false;
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null) continue;
      const r = await callHost(target(rec), 'GET', `/v1/snapshots/${encodeURIComponent(id)}`).catch(() => undefined);
      if (r?.status !== 200) continue;
      const sandbox = (await this.placements.of('sandbox', String((r.json as Json).sandboxId)))[0];
      await this.recordSnapshot(target(rec), r.json as Json, sandbox?.view);
      return true;
    }
    return false;
  }

  /** Copies snapshot `id` onto compatible ready hosts until `replicas` hold it. */
  async replicate(id: string): Promise<void> {
    const copies = await this.placements.of('snapshot', id);
    if (!copies.length) return;
    const info = await this.infoOf(copies);
    const compat = new Set((await this.fleet.compatibility(info.requirements, info.vm)).filter((c) => c.compatible).map((c) => c.hostId));
    const holders = new Set(copies.map((c) => c.hostId));
    const more = (await this.placeable()).filter((c) => compat.has(c.id) && !holders.has(c.id)).sort((a, b) => a.load - b.load);
    for (const c of more.slice(0, Math.max(0, this.opts.replicas - holders.size))) await this.copySnapshot(id, copies, c.target!);
  }

  // --- lists -----------------------------------------------------------------------------------

  /**
   * `GET /v1/sandboxes` over the fleet: the local page's items, each ready host's, and the records
   * of lost hosts' sandboxes, merged oldest first under one cursor.
   */
  async listSandboxes(query: string, local: Json[], states: string[], limit: number, nextToken: string | undefined): Promise<{ sandboxes: Json[]; nextToken: string | null }> {
    const all = [...local];
    const placed = await this.placements.list('sandbox');
    const seen = new Set(all.map((s) => String(s.sandboxId)));
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null) continue;
      for (const s of await this.allPages(target(rec), 'sandboxes', query)) {
        seen.add(String(s.sandboxId));
        all.push(showHost(s, rec.id) as Json);
      }
    }
    const hostsById = new Map((await this.hosts.list()).map((h) => [h.id, h]));
    for (const p of placed) {
      if (seen.has(p.id)) continue;
      const rec = hostsById.get(p.hostId);
      // (a ready host answered for its own sandboxes: its record is the truth of their states)
      if (rec && rec.lostAt === null) continue;
      const v = this.recordView(p, rec);
      if (states.includes(String(v.state)) || (v.state === 'lost' && states.includes('running'))) all.push(v);
    }
    return page(all, 'sandboxId', limit, nextToken, 'sandboxes');
  }

  /** `GET /v1/snapshots` over the fleet (a snapshot held by several hosts is listed once). */
  async listSnapshots(query: string, local: Json[], limit: number, nextToken: string | undefined): Promise<{ snapshots: Json[]; nextToken: string | null }> {
    const all = [...local];
    const seen = new Set(all.map((s) => String(s.snapshotId)));
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null) continue;
      for (const s of await this.allPages(target(rec), 'snapshots', query)) {
        if (seen.has(String(s.snapshotId))) continue;
        seen.add(String(s.snapshotId));
        all.push(s);
      }
    }
    const r = page(all, 'snapshotId', limit, nextToken, 'snapshots');
    return { snapshots: r.snapshots, nextToken: r.nextToken };
  }

  private allPages(host: HostTarget, what: 'sandboxes' | 'snapshots', query: string): Promise<Json[]> {
    return allPages(async (token) => {
      const q = new URLSearchParams(query);
      q.delete('nextToken');
      q.set('limit', '1000');
      if (token) q.set('nextToken', token);
      const r = await callHost(host, 'GET', `/v1/${what}?${q.toString()}`).catch(() => undefined);
      // (a host that does not answer now: its items are missing from this page, not an error)
      if (!r || r.status !== 200) return { items: [] };
      const j = r.json as Json;
      return { items: j[what] as Json[], nextToken: j.nextToken as string | null };
    });
  }

  /** `POST /v1/gc` / `GET /v1/gc` on every ready host; their reports summed. */
  async gcAll(dryRun: boolean, local: Json): Promise<Json> {
    const reports: Json[] = [local];
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null) continue;
      const r = await callHost(target(rec), dryRun ? 'GET' : 'POST', '/v1/gc', dryRun ? undefined : {});
      if (r.status === 200) reports.push(r.json as Json);
    }
    const sum: Json = { ...local };
    for (const key of Object.keys(local)) {
      const v = local[key];
      if (typeof v === 'number') sum[key] = reports.reduce((n, r) => n + (Number(r[key]) || 0), 0);
      else if (Array.isArray(v)) sum[key] = reports.flatMap((r) => (Array.isArray(r[key]) ? (r[key] as unknown[]) : []));
    }
    return sum;
  }

  // --- failure ---------------------------------------------------------------------------------

  /**
   * A host that was lost is back (fenced): what it runs is compared with the records, the records
   * winning. A sandbox the control plane does not place there (killed while the host was lost, a
   * fork's child it never recorded) is killed; one it places there is adopted as it is.
   */
  async reconcile(hostId: string, opts: { graceMs?: number } = {}): Promise<{ killed: string[] }> {
    const rec = await this.hosts.get(hostId);
    if (!rec || rec.lostAt !== null) return { killed: [] };
    // (a periodic pass spares young sandboxes: one whose create or fork is still on its way back to
    // the control plane that asked for it is not recorded yet)
    const bornBefore = Date.now() - (opts.graceMs ?? 0);
    const host = target(rec);
    const placed = new Map((await this.placements.onHost(hostId)).filter((p) => p.kind === 'sandbox').map((p) => [p.id, p]));
    const killed: string[] = [];
    for (const s of await this.allPages(host, 'sandboxes', 'state=creating,running,hibernating,paused,resuming')) {
      const id = String(s.sandboxId);
      const p = placed.get(id);
      if (p && p.endedAt === null) continue;
      if (!p && Date.parse(String(s.createdAt)) > bornBefore) continue;
      const r = await callHost(host, 'DELETE', `/v1/sandboxes/${id}`);
      if (r.status === 204) killed.push(id);
      else this.log.error({ hostId, sandboxId: id, status: r.status }, 'reconciliation could not kill a sandbox');
    }
    if (killed.length) this.log.warn({ hostId, killed }, 'reconciled a returning host: killed what the records do not place there');
    return { killed };
  }

  /**
   * Reconciles every ready host now and then (a host restarted faster than it is found lost is never
   * fenced, yet may run a sandbox whose create or fork it never answered), sparing what is younger
   * than `graceMs`. Returns the stop function.
   */
  reconcileEvery(everyMs: number, graceMs: number): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      void (async () => {
        for (const h of await this.hosts.list()) if (h.lostAt === null) await this.reconcile(h.id, { graceMs }).catch(() => {});
      })().finally(() => (running = false));
    }, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  // --- helpers ---------------------------------------------------------------------------------

  private recordView(p: PlacementRecord, rec: HostRecord | undefined): Json {
    const v: Json = { ...p.view, hostId: p.hostId };
    if (p.endedAt !== null) return { ...v, state: 'killed', endedAt: new Date(p.endedAt).toISOString(), endReason: 'killed through the control plane while its host was lost', expiresAt: null };
    const live = ['creating', 'running', 'hibernating', 'resuming', 'killing'].includes(String(v.state));
    // a running sandbox of a lost host is not shown as running: its state is unknown until it is back
    return !rec || rec.lostAt !== null ? { ...v, state: live ? 'lost' : v.state, expiresAt: null } : v;
  }

  private async readyHolders(copies: PlacementRecord[]): Promise<HostTarget[]> {
    const out: HostTarget[] = [];
    for (const c of copies) {
      const rec = await this.hosts.get(c.hostId);
      if (rec && rec.lostAt === null) out.push(target(rec));
    }
    return out;
  }

  /** Ready (not draining, not lost) joined hosts, each with its load. */
  private async placeable(): Promise<Candidate[]> {
    const views = new Map((await this.fleet.list()).map((v) => [v.hostId, v]));
    const out: Candidate[] = [];
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null || rec.draining) continue;
      const recent = (await this.placements.onHost(rec.id)).filter((p) => p.kind === 'sandbox' && p.createdAt > rec.lastHeartbeat && p.endedAt === null).length;
      out.push({ id: rec.id, target: target(rec), view: views.get(rec.id), load: (rec.counts as { sandboxes: number }).sandboxes + recent });
    }
    return out;
  }

  private localCandidate(): Candidate {
    return { id: LOCAL_HOST_ID, target: undefined, view: undefined, load: this.opts.localLoad() };
  }

  /** The hosts the volumes of a create request live on (undefined: it mounts none of the fleet's). */
  private async volumeHosts(body: Json): Promise<Set<string> | undefined> {
    const vols = body.volumes as Record<string, string> | Array<{ name: string }> | undefined;
    if (!vols) return undefined;
    const names = Array.isArray(vols) ? vols.map((v) => v.name) : Object.values(vols);
    const hosts = new Set<string>();
    for (const n of names) for (const p of await this.placements.of('volume', n)) hosts.add(p.hostId);
    if (hosts.size > 1) throw new NsError('bad_request', `the volumes live on different hosts (${[...hosts].join(', ')}): a sandbox mounts volumes of one host`, { details: { hostIds: [...hosts] } });
    return hosts.size ? hosts : undefined;
  }
}

interface Candidate {
  id: string;
  target: HostTarget | undefined;
  view: HostView | undefined;
  load: number;
}

function target(rec: HostRecord): HostTarget {
  return { id: rec.id, url: rec.url, credential: rec.controlCredential };
}

function lostError(hostId: string, what: string): NsError {
  return new NsError('host_unavailable', `${what}: its host ${hostId} is lost (no heartbeat); it is unreachable until the host is back`, { details: { hostId } });
}

function errorBody(e: NsError): Json {
  return { error: { code: e.code, message: e.message, details: e.details } };
}

function answer(res: ServerResponse, status: number, body: unknown): true {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
  } else {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  return true;
}

/** A host's answer as the control plane shows it: `hostId` "local" is that host's id. */
export function showHost(body: unknown, hostId: string, depth = 0): unknown {
  if (depth > 4 || body === null || typeof body !== 'object') return body;
  if (Array.isArray(body)) return body.map((b) => showHost(b, hostId, depth + 1));
  const out: Json = {};
  for (const [k, v] of Object.entries(body as Json)) out[k] = k === 'hostId' && v === LOCAL_HOST_ID ? hostId : showHost(v, hostId, depth + 1);
  return out;
}

function page<K extends string>(items: Json[], idKey: string, limit: number, nextToken: string | undefined, key: K): { [P in K]: Json[] } & { nextToken: string | null } {
  const r = mergedPage(items, idKey, (j) => Date.parse(String(j.createdAt)), limit, nextToken);
  return { [key]: r.items, nextToken: r.nextToken ?? null } as { [P in K]: Json[] } & { nextToken: string | null };
}

/**
 * One page of `items` merged from several servers, oldest first by `at` then `idKey` (an item
 * listed twice counts once), after the cursor `nextToken` (the fleet's own: the servers' cursors do
 * not mix); the next cursor.
 */
export function mergedPage(items: Json[], idKey: string, at: (j: Json) => number, limit: number, nextToken: string | undefined): { items: Json[]; nextToken: string | undefined } {
  const seen = new Set<string>();
  const unique = items.filter((j) => !seen.has(String(j[idKey])) && seen.add(String(j[idKey])));
  unique.sort((a, b) => at(a) - at(b) || String(a[idKey]).localeCompare(String(b[idKey])));
  let rest = unique;
  if (nextToken) {
    const c = decodeCursor(nextToken);
    rest = unique.filter((j) => at(j) > c.createdAt || (at(j) === c.createdAt && String(j[idKey]) > c.id));
  }
  const out = rest.slice(0, limit);
  const last = out.at(-1);
  return { items: out, nextToken: rest.length > limit && last ? encodeCursor(at(last), String(last[idKey])) : undefined };
}

export { hostUnavailable };
