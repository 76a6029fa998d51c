import { DataDirLayout, LocalVmHost, NsError, parseEgressRules, SANDBOX_ID_RE, type EgressRules, type GuestAgent, type RequirementMismatch, type VmHost } from '@nullspace/runtime';
import { Admission } from '../admission.js';
import type { Config } from '../config.js';
import { notFound } from '../errors.js';
import type { EventLog } from '../events/log.js';
import type { Logger } from '../log.js';
import type { ListQuery, SandboxRecord, SandboxStore } from '../store/sandboxes.js';
import type { SnapshotKind, SnapshotQuery, SnapshotRecord, SnapshotStore } from '../store/snapshots.js';
import { KeyedGate, KeyedMutex, RwLock } from '../util.js';
import type { VolumeService } from '../volumes.js';
import { Captures } from './capture.js';
import { Chains } from './chains.js';
import type { HostInfo, SandboxContext } from './context.js';
import { Creates, type CreateSandboxRequest } from './create.js';
import { EgressRulesService } from './egress.js';
import { Faults } from './faults.js';
import { Guests } from './guest.js';
import { Hibernation, KEEP_HIBERNATIONS } from './hibernate.js';
import { Kills } from './kill.js';
import { isTerminal } from './lifecycle.js';
import { LiveSet } from './live.js';
import { MetricsSampler, type MetricsSample } from './metrics.js';
import { Reaper } from './reaper.js';
import { Recovery } from './recovery.js';
import { Restores } from './restore.js';
import { Sources } from './sources.js';
import { Lifecycle } from './transition.js';
import { WarmSlots } from './warm.js';
import { Watcher } from './watch.js';

export type { CreateSandboxRequest } from './create.js';
export type { MetricsSample } from './metrics.js';

/** How long closing the server waits for lifecycle operations under way. */
const CLOSE_WAIT_MS = 15_000;

/** Whether `id` has the form of a sandbox id (for routes that take one from a header). */
export function isSandboxId(id: string): boolean {
  return SANDBOX_ID_RE.test(id);
}

/**
 * The sandboxes of this server: the facade the API routes use. Each concern is its own module in
 * this folder (docs/ARCHITECTURE.md has the map); every VM is reached through the `VmHost` seam.
 */
export class SandboxManager {
  /** Snapshot captures and restores read the layer store; the garbage collector writes it. */
  readonly layersLock = new RwLock();
  /** Called when layers may have lost their last reference (a sandbox ended, a snapshot was deleted). */
  onLayersReleased: () => void = () => {};

  private closing = false;
  private closed = false;
  private readonly ctx: SandboxContext;
  private readonly layout: DataDirLayout;
  private readonly admission: Admission;
  private readonly guests: Guests;
  private readonly sources: Sources;
  private readonly warm: WarmSlots;
  private readonly captures: Captures;
  private readonly creates: Creates;
  private readonly hibernation: Hibernation;
  private readonly kills: Kills;
  private readonly reaper: Reaper;
  private readonly recovery: Recovery;
  private readonly metricsSampler: MetricsSampler;

  constructor(
    private readonly config: Config,
    private readonly store: SandboxStore,
    private readonly snapshots: SnapshotStore,
    volumes: VolumeService,
    host: HostInfo,
    private readonly log: Logger,
    /** Where lifecycle events are published (`GET /v1/events`, webhooks). */
    events: EventLog,
    /** What runs the VMs (default: this machine). Tests give a fake one. */
    vms?: VmHost,
  ) {
    this.layout = new DataDirLayout(config.dataDir);
    this.admission = new Admission(config.limits);
    const live = new LiveSet();
    const effects = {
      teardown: async (rec: SandboxRecord) => {
        const entry = live.get(rec.id);
        if (entry) {
          for (const e of await entry.teardown()) log.error({ sandboxId: rec.id, err: e.message }, 'releasing what the sandbox held');
        } else if (rec.pid && rec.vmSpec) {
          // a VM this server does not drive (should not happen): make sure it is gone
          await (await ctx.vms.adopt(rec.vmSpec, rec.pid))?.kill();
        }
        ctx.vms.removeFiles(rec.id);
        ctx.vms.releaseUid(rec.id, rec.vmSpec);
      },
      dropHibernations: async (id: string) => {
        for (const h of await snapshots.hibernations(id)) await snapshots.delete(h.id);
      },
      // a sandbox's history keeps its last few hibernations (older ones: snapshot_not_latest anyway)
      pruneHibernations: async (id: string) => {
        for (const old of (await snapshots.hibernations(id)).slice(KEEP_HIBERNATIONS)) await snapshots.delete(old.id);
      },
      dropMetrics: (id: string) => this.metricsSampler.forget(id),
      layersReleased: () => this.onLayersReleased(),
    };
    const self = this;
    const ctx: SandboxContext = {
      config,
      layout: this.layout,
      store,
      snapshots,
      volumes,
      host,
      vms: vms ?? new LocalVmHost(host.profile, this.layout, host.uids, config.volumeGid),
      log,
      admission: this.admission,
      locks: new KeyedMutex(),
      gate: new KeyedGate(),
      layersLock: this.layersLock,
      live,
      lifecycle: new Lifecycle(store, effects, events),
      faults: new Faults(config.faultInjection, config.dataDir, log),
      egress: new EgressRulesService(host.egress, store, log, config.networkGuardCheckMs),
      record: (id) => this.get(id),
      layersReleased: () => this.onLayersReleased(),
      get closing() {
        return self.closing;
      },
      get closed() {
        return self.closed;
      },
    };
    this.ctx = ctx;
    const chains = new Chains(ctx);
    const watcher = new Watcher(ctx);
    const restores = new Restores(ctx);
    this.guests = new Guests(ctx);
    this.sources = new Sources(ctx, chains);
    this.warm = new WarmSlots(ctx, this.sources, restores);
    this.captures = new Captures(ctx, this.guests, chains, this.warm);
    this.creates = new Creates(ctx, this.sources, restores, this.warm, this.guests, watcher, this.captures, (id, reason) => this.kills.kill(id, reason));
    this.hibernation = new Hibernation(ctx, this.captures, chains, this.sources, restores, this.guests, watcher);
    this.kills = new Kills(ctx);
    this.reaper = new Reaper(ctx, this.kills, this.hibernation);
    this.recovery = new Recovery(ctx, this.guests, watcher);
    this.metricsSampler = new MetricsSampler(ctx, this.guests);
  }

  /** What runs the VMs (template builds start theirs there too). */
  get vms(): VmHost {
    return this.ctx.vms;
  }

  get layersDir(): string {
    return this.layout.layers;
  }

  /** An admission slot for a VM that is not a sandbox (a template build's): counted with the sandboxes. */
  admit(memoryMiB: number): { release: () => void } {
    if (this.closing) throw new NsError('shutting_down', 'the server is shutting down');
    return this.admission.reserve(memoryMiB);
  }

  get usage(): { sandboxes: number; memoryMiB: number } {
    return this.admission.usage;
  }

  get warmPool(): { size: number; ready: number; preparing: number } {
    return this.warm.warmPool;
  }

  get snapshotPool(): { size: number; ready: number; preparing: number; snapshots: string[] } {
    return this.warm.snapshotPool;
  }

  /** Recovers state after a (re)start and starts the timeout reaper and the warm pools. */
  async start(): Promise<void> {
    await this.recovery.run();
    this.reaper.start();
    this.metricsSampler.start();
    this.warm.refill();
  }

  /** Stops background work and drops connections; VMs keep running (a restarted server re-adopts them). */
  async close(): Promise<void> {
    this.closing = true;
    this.reaper.stop();
    this.metricsSampler.stop();
    // warm VMs are not sandboxes: they go with the server
    await this.warm.close();
    // lifecycle operations under way (a create, a resume, the reaper's hibernation) finish first, so
    // that their records are not left half-way for the next start to repair; a long one (a disk
    // chain streamed in the background) is not waited for beyond CLOSE_WAIT_MS
    await this.ctx.locks.idle(CLOSE_WAIT_MS);
    for (const l of this.ctx.live.all()) if (l.attached) l.detach();
    await this.ctx.egress.close();
    this.closed = true;
  }

  /** Its egress rules and the connections they refused (ended VM lives and the running one). */
  async network(id: string): Promise<{ allowOut: string[]; denyOut: string[]; refusedConnections: number }> {
    const rec = await this.get(id);
    const live = await this.ctx.egress.liveRefused(id);
    const now = await this.get(id);
    return { allowOut: rec.egress?.allowOut ?? [], denyOut: rec.egress?.denyOut ?? [], refusedConnections: now.egressRefused + live };
  }

  /** Replaces its egress rules (checked: 400 `invalid_network_rule`): applied at once when its VM runs, kept for its next resume otherwise. */
  async updateNetwork(id: string, input: EgressRules): Promise<{ allowOut: string[]; denyOut: string[]; refusedConnections: number }> {
    await this.get(id);
    const rules = parseEgressRules(input);
    this.ctx.egress.check(rules);
    await this.ctx.locks.run(id, async () => {
      const rec = await this.get(id);
      if (isTerminal(rec.state)) {
        throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: its network rules can no longer change`, { details: { state: rec.state } });
      }
      await this.ctx.egress.update(id, rules);
    });
    return this.network(id);
  }

  async get(id: string): Promise<SandboxRecord> {
    const rec = SANDBOX_ID_RE.test(id) ? await this.store.get(id) : undefined;
    if (!rec) throw notFound('sandbox', id);
    return rec;
  }

  list(q: ListQuery): Promise<{ items: SandboxRecord[]; nextToken: string | undefined }> {
    return this.store.list(q);
  }

  /** The metrics samples of a sandbox within [start, end] (ms), oldest first (none once it stopped running). */
  async metrics(id: string, start?: number, end?: number): Promise<MetricsSample[]> {
    await this.get(id);
    return this.metricsSampler.samples(id, start, end);
  }

  /** The latest metrics sample of a sandbox known to exist (undefined before its first). */
  latestSample(id: string): MetricsSample | undefined {
    return this.metricsSampler.samples(id).at(-1);
  }

  /** The latest sample of each running sandbox (for the Prometheus route). */
  latestMetrics(): Array<{ sandboxId: string; sample: MetricsSample }> {
    return this.metricsSampler.latest();
  }

  create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    return this.creates.create(req);
  }

  fork(
    id: string,
    opts: { metadata?: Record<string, string> | undefined; envs?: Record<string, string> | undefined; timeoutMs?: number | undefined; count?: number | undefined },
  ): Promise<{ children: SandboxRecord[]; pauseMs: number | null }> {
    return this.creates.fork(id, opts);
  }

  async snapshot(id: string, opts: { kind: SnapshotKind; metadata: Record<string, string> }): Promise<SnapshotRecord> {
    await this.get(id);
    return this.captures.snapshot(id, opts);
  }

  hibernate(id: string, reason = 'hibernated by request'): Promise<SnapshotRecord> {
    return this.hibernation.hibernate(id, reason);
  }

  resume(id: string, snapshotId?: string): Promise<SandboxRecord> {
    return this.hibernation.resume(id, snapshotId);
  }

  kill(id: string, reason = 'killed by request'): Promise<SandboxRecord> {
    return this.kills.kill(id, reason);
  }

  async setTimeout(id: string, timeoutMs: number): Promise<SandboxRecord> {
    const rec = await this.get(id);
    // (only while still running: the check and the write are one conditional update)
    if (rec.state !== 'running' || !(await this.store.patch(id, { timeoutMs, expiresAt: Date.now() + timeoutMs }, ['running']))) {
      const state = rec.state !== 'running' ? rec.state : (await this.get(id)).state;
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${state}`, { details: { state } });
    }
    return this.get(id);
  }

  /**
   * Traffic to a running sandbox's preview URLs starts its timeout again (expiresAt = now +
   * timeoutMs, written at most once a second), as if it were set anew.
   */
  async touch(id: string): Promise<void> {
    const rec = await this.store.get(id);
    if (rec?.state !== 'running' || rec.expiresAt === null) return;
    const at = Date.now() + rec.timeoutMs;
    if (at - rec.expiresAt >= 1000) await this.store.patch(id, { expiresAt: at }, ['running']);
  }

  /** The agent of a running sandbox, reconnecting (and re-initializing) when the session was lost. */
  async agent(id: string): Promise<GuestAgent> {
    return this.guests.agent(id, await this.get(id));
  }

  /** The agent for a process start or file work, once no capture is under way (see guest.ts). */
  async agentFor(id: string, use: 'start' | 'files'): Promise<{ agent: GuestAgent; done: () => void }> {
    return this.guests.agentFor(await this.get(id), use);
  }

  getSnapshot(id: string): Promise<SnapshotRecord> {
    return this.sources.getSnapshot(id);
  }

  compatibility(snap: SnapshotRecord): { compatible: boolean; mismatches: RequirementMismatch[] } {
    return this.sources.compatibility(snap);
  }

  listSnapshots(q: SnapshotQuery): Promise<{ items: SnapshotRecord[]; nextToken: string | undefined }> {
    return this.snapshots.list(q);
  }

  /** Bytes allocated by a snapshot's layers (its disk layer alone, not the chain under it). */
  async snapshotBytes(s: SnapshotRecord): Promise<number> {
    let sum = 0;
    for (const id of [s.memLayer, s.stateLayer, s.diskLayer]) sum += (await this.snapshots.layer(id))?.bytes ?? 0;
    return sum;
  }

  /** Deletes a snapshot's record at once; its layers are freed by the collector when unreferenced. */
  async deleteSnapshot(id: string): Promise<void> {
    const snap = await this.getSnapshot(id);
    if (snap.kind === 'hibernate') {
      const owner = await this.store.get(snap.sandboxId);
      const latest = (await this.snapshots.hibernations(snap.sandboxId))[0];
      if (owner && !isTerminal(owner.state) && latest?.id === snap.id) {
        throw new NsError('snapshot_in_use', `snapshot ${id} is the latest hibernation of sandbox ${snap.sandboxId}, which resumes from it; kill the sandbox to drop it`, {
          details: { snapshotId: id, sandboxId: snap.sandboxId },
        });
      }
    }
    if (!(await this.snapshots.delete(snap.id))) throw notFound('snapshot', id);
    this.warm.forget(snap.id);
    this.log.info({ snapshotId: id }, 'snapshot deleted');
    this.onLayersReleased();
  }
}
