import { randomBytes, randomUUID } from 'node:crypto';
import { NsError, parseEgressRules, wrapError, type EgressRules, type VmHandle } from '@nullspace/runtime';
import { checkFreeDisk } from '../admission.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import { newId } from '../util.js';
import type { Captures } from './capture.js';
import type { SandboxContext } from './context.js';
import type { Guests } from './guest.js';
import type { Restores } from './restore.js';
import type { Sources } from './sources.js';
import type { WarmSlots } from './warm.js';
import type { Watcher } from './watch.js';

export interface CreateSandboxRequest {
  /** A template name, or (with `snapshotId`) ignored. */
  template: string;
  snapshotId?: string | undefined;
  /** Set for fork children: the source sandbox. */
  forkedFrom?: string | undefined;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  timeoutMs: number;
  allowInternetAccess: boolean;
  /** What happens when the timeout expires (default kill). */
  onTimeout?: 'kill' | 'hibernate' | undefined;
  /** A preview URL request wakes it when hibernated (default false). */
  autoResume?: boolean | undefined;
  /** Its preview URLs are served without its traffic token (default false). */
  allowPublicTraffic?: boolean | undefined;
  /** Egress rules (undefined: a snapshot's, or none). */
  egress?: EgressRules | null | undefined;
  /** Shared volumes: guest path -> volume name. From a snapshot: its volumes (this must match or be absent). */
  volumes?: Record<string, string> | undefined;
  /** From a snapshot whose volume was deleted: start with an empty placeholder instead of refusing. */
  allowMissingVolumes?: boolean | undefined;
  /** An admission slot reserved by the caller (an N-way fork reserves all of its children first). */
  reservation?: { release: () => void } | undefined;
}

/** The most children one fork request makes (`count`). */
export const MAX_FORK_COUNT = 32;
/** How many children of one fork are started at a time. */
const FORK_CONCURRENCY = 4;

/** New sandboxes: from a template, from a snapshot, or as a live fork of a running one. */
export class Creates {
  constructor(
    private readonly ctx: SandboxContext,
    private readonly sources: Sources,
    private readonly restores: Restores,
    private readonly warm: WarmSlots,
    private readonly guests: Guests,
    private readonly watcher: Watcher,
    private readonly captures: Captures,
    /** Kills a sandbox (the children of a fork that could not be started whole). */
    private readonly kill: (id: string, reason: string) => Promise<unknown>,
  ) {}

  async create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    const { ctx } = this;
    if (ctx.closing) throw new NsError('shutting_down', 'the server is shutting down');
    // the garbage collector waits while the source's layers are resolved and cloned (not longer:
    // the agent connection and sys.init that follow may take a while)
    const releaseLayers = await ctx.layersLock.acquireRead();
    try {
      const src = await this.sources.resolve(req);
      // a sandbox from a snapshot (a fork's child too) keeps the snapshot's rules unless given its own
      // (checked and normalized after the source: an unknown template, snapshot or volume is a 404 first)
      const egress = req.egress ? parseEgressRules(req.egress) : req.egress === undefined ? (src.vm.egress ?? null) : null;
      ctx.egress.check(egress);
      checkFreeDisk(ctx.config.dataDir, ctx.config.limits.minFreeDiskMiB, 'creating a sandbox');
      const reservation = req.reservation ?? ctx.admission.reserve(src.vm.memoryMiB);
      const slot = this.warm.take(src, req.allowInternetAccess);
      const id = slot?.id ?? newId('sbx');
      const now = Date.now();
      const envs = { ...src.envs, ...req.envs };
      await ctx.store.insert({
        id,
        state: 'creating',
        template: src.template,
        snapshotId: src.snapshotId,
        metadata: req.metadata,
        envs,
        memoryMiB: src.vm.memoryMiB,
        vcpus: src.vm.vcpus,
        allowInternetAccess: req.allowInternetAccess,
        timeoutMs: req.timeoutMs,
        createdAt: now,
        startedAt: null,
        expiresAt: null,
        endedAt: null,
        endReason: null,
        errorCode: null,
        pid: null,
        identity: { machineId: randomBytes(16).toString('hex'), bootId: randomUUID() },
        vmSpec: null,
        requirements: src.requirements,
        diskParentLayer: src.diskParentLayer,
        forkedFrom: req.forkedFrom ?? null,
        onTimeout: req.onTimeout ?? 'kill',
        remainingMs: null,
        pausedAt: null,
        volumes: src.volumes,
        // every sandbox has its own, a fork or a sandbox from a snapshot too
        trafficToken: randomBytes(24).toString('hex'),
        allowPublicTraffic: req.allowPublicTraffic ?? false,
        autoResume: req.autoResume ?? false,
        egress,
        egressRefused: 0,
        accessToken: randomBytes(24).toString('base64url'),
        updatedAt: now,
      });
      return await ctx.locks.run(id, async () => {
        const t0 = Date.now();
        const live = ctx.live.begin(id);
        live.own('release admission', reservation.release);
        const phases: Record<string, number> = {};
        try {
          let vm: VmHandle;
          try {
            if (slot) {
              live.own('warm slot', () => slot.cleanup.run());
              phases.warm = 1;
              slot.vm.setNice(0); // prepared at a low priority; a sandbox now
              await ctx.store.patch(id, { pid: slot.vm.pid, vmSpec: slot.spec });
              vm = slot.vm;
            } else {
              vm = await this.restores.restore(id, src, req.allowInternetAccess, live.cleanup, phases, req.allowMissingVolumes === true);
            }
            live.setVm(vm);
            await ctx.egress.bind(live);
          } finally {
            releaseLayers();
          }
          const rec = await ctx.record(id);
          let t = Date.now();
          const agent = await vm.connectAgent(15_000);
          phases.agentMs = Date.now() - t;
          t = Date.now();
          await this.guests.mountVolumes(rec, agent);
          phases.volumesMs = Date.now() - t;
          t = Date.now();
          await this.guests.init(rec, agent);
          phases.initMs = Date.now() - t;
          const running = await ctx.lifecycle.apply(await ctx.record(id), { type: 'started', at: Date.now() });
          this.watcher.attach(live);
          ctx.log.info({ sandboxId: id, template: src.template, snapshotId: src.snapshotId, ms: Date.now() - t0, ...phases }, 'sandbox created');
          return running;
        } catch (err) {
          const wrapped = wrapError(err, `creating sandbox ${id}`, 'vm_start_failed');
          // (the teardown, whatever the create acquired, is the step's own effect)
          await ctx.lifecycle.apply(await ctx.record(id), { type: 'createFailed', at: Date.now(), code: wrapped.code, message: wrapped.message });
          ctx.log.error({ sandboxId: id, err: wrapped.message }, 'sandbox create failed');
          throw wrapped;
        }
      });
    } finally {
      releaseLayers();
    }
  }

  /**
   * `count` new running sandboxes (default 1) whose memory and disk equal the source's at one
   * instant: one capture, however many children, each restored from its layers (RAM clones and disk
   * overlays share them) and given its own identity by its sys.init. The source is paused only for
   * the capture and keeps its id, timeout and state. Admission is reserved for every child before
   * the source is paused; if a child cannot be started, those started are killed and the request
   * fails: never a partial set. The capture is an internal snapshot, never listed, removed once the
   * children started (the layers they share are held by them).
   */
  async fork(
    id: string,
    opts: { metadata?: Record<string, string> | undefined; envs?: Record<string, string> | undefined; timeoutMs?: number | undefined; count?: number | undefined },
  ): Promise<{ children: SandboxRecord[]; pauseMs: number | null }> {
    const { ctx } = this;
    const count = opts.count ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > MAX_FORK_COUNT) {
      throw new NsError('validation_failed', `count must be an integer from 1 to ${MAX_FORK_COUNT}`, { details: { field: 'count' } });
    }
    const src = await ctx.record(id);
    if (src.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${src.state}: only a running sandbox can be forked`, { details: { state: src.state } });
    }
    checkFreeDisk(ctx.config.dataDir, ctx.config.limits.minFreeDiskMiB, 'forking a sandbox');
    // every child is admitted before the source is paused (synchronously: no other create overtakes)
    const reservations: Array<{ release: () => void }> = [];
    try {
      for (let i = 0; i < count; i++) reservations.push(ctx.admission.reserve(src.memoryMiB));
    } catch (err) {
      for (const r of reservations) r.release();
      if (count > 1 && err instanceof NsError) err.message = `forking ${count} children: ${err.message}`;
      throw err;
    }
    let snap;
    try {
      snap = await this.captures.snapshot(id, { kind: 'fork', metadata: {} });
    } catch (err) {
      for (const r of reservations) r.release();
      throw err;
    }
    const children: SandboxRecord[] = [];
    let next = 0;
    try {
      let failure: unknown;
      const worker = async () => {
        while (failure === undefined && next < count) {
          const reservation = reservations[next++]!;
          try {
            children.push(
              await this.create({
                template: src.template,
                snapshotId: snap.id,
                forkedFrom: id,
                metadata: opts.metadata ?? src.metadata,
                envs: opts.envs ?? {},
                timeoutMs: opts.timeoutMs ?? src.timeoutMs,
                allowInternetAccess: src.allowInternetAccess,
                allowPublicTraffic: src.allowPublicTraffic,
                // the source runs without the volumes that were already gone when it was created: so does the child
                allowMissingVolumes: true,
                reservation,
              }),
            );
          } catch (err) {
            reservation.release(); // (idempotent: a create that got as far as its teardown released it)
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(FORK_CONCURRENCY, count) }, worker));
      if (failure !== undefined) {
        const why = `fork of ${id} failed: one of its ${count} children could not be started`;
        await Promise.all(children.map((c) => this.kill(c.id, why).catch(() => {})));
        throw failure;
      }
      await ctx.lifecycle.apply(await ctx.record(id), { type: 'forked', children: children.map((c) => c.id), snapshotId: snap.id, pauseMs: snap.pauseMs });
      return { children, pauseMs: snap.pauseMs };
    } finally {
      // the slots of children never started (the slots of those that started are theirs until they end)
      for (const r of reservations.slice(next)) r.release();
      await ctx.snapshots.delete(snap.id);
      ctx.layersReleased();
    }
  }
}
