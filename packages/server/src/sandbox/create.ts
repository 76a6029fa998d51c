import { randomBytes, randomUUID } from 'node:crypto';
import { NsError, wrapError, type VmHandle } from '@nullspace/runtime';
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
  /** Shared volumes: guest path -> volume name. From a snapshot: its volumes (this must match or be absent). */
  volumes?: Record<string, string> | undefined;
  /** From a snapshot whose volume was deleted: start with an empty placeholder instead of refusing. */
  allowMissingVolumes?: boolean | undefined;
}

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
  ) {}

  async create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    const { ctx } = this;
    if (ctx.closing) throw new NsError('shutting_down', 'the server is shutting down');
    // the garbage collector waits while the source's layers are resolved and cloned (not longer:
    // the agent connection and sys.init that follow may take a while)
    const releaseLayers = await ctx.layersLock.acquireRead();
    try {
      const src = await this.sources.resolve(req);
      checkFreeDisk(ctx.config.dataDir, ctx.config.limits.minFreeDiskMiB, 'creating a sandbox');
      const reservation = ctx.admission.reserve(src.vm.memoryMiB);
      const slot = this.warm.take(src, req.allowInternetAccess);
      const id = slot?.id ?? newId('sbx');
      const now = Date.now();
      const envs = { ...src.envs, ...req.envs };
      ctx.store.insert({
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
              ctx.store.patch(id, { pid: slot.vm.pid, vmSpec: slot.spec });
              vm = slot.vm;
            } else {
              vm = await this.restores.restore(id, src, req.allowInternetAccess, live.cleanup, phases, req.allowMissingVolumes === true);
            }
            live.setVm(vm);
          } finally {
            releaseLayers();
          }
          const rec = ctx.record(id);
          let t = Date.now();
          const agent = await vm.connectAgent(15_000);
          phases.agentMs = Date.now() - t;
          t = Date.now();
          await this.guests.mountVolumes(rec, agent);
          phases.volumesMs = Date.now() - t;
          t = Date.now();
          await this.guests.init(rec, agent);
          phases.initMs = Date.now() - t;
          const running = await ctx.lifecycle.apply(ctx.record(id), { type: 'started', at: Date.now() });
          this.watcher.attach(live);
          ctx.log.info({ sandboxId: id, template: src.template, snapshotId: src.snapshotId, ms: Date.now() - t0, ...phases }, 'sandbox created');
          return running;
        } catch (err) {
          const wrapped = wrapError(err, `creating sandbox ${id}`, 'vm_start_failed');
          // (the teardown, whatever the create acquired, is the step's own effect)
          await ctx.lifecycle.apply(ctx.record(id), { type: 'createFailed', at: Date.now(), code: wrapped.code, message: wrapped.message });
          ctx.log.error({ sandboxId: id, err: wrapped.message }, 'sandbox create failed');
          throw wrapped;
        }
      });
    } finally {
      releaseLayers();
    }
  }

  /**
   * A new running sandbox whose memory and disk equal the source's at this instant; the source is
   * paused only for the capture and keeps its id, timeout and state. The capture is an internal
   * snapshot, never listed, removed once the child started (the layers it shares with the child
   * are held by the child).
   */
  async fork(
    id: string,
    opts: { metadata?: Record<string, string> | undefined; envs?: Record<string, string> | undefined; timeoutMs?: number | undefined },
  ): Promise<{ child: SandboxRecord; pauseMs: number | null }> {
    const { ctx } = this;
    const src = ctx.record(id);
    if (src.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${src.state}: only a running sandbox can be forked`, { details: { state: src.state } });
    }
    // refuse before pausing the source when the child could not be admitted anyway
    ctx.admission.check(src.memoryMiB);
    checkFreeDisk(ctx.config.dataDir, ctx.config.limits.minFreeDiskMiB, 'forking a sandbox');
    const snap = await this.captures.snapshot(id, { kind: 'fork', metadata: {} });
    try {
      const child = await this.create({
        template: src.template,
        snapshotId: snap.id,
        forkedFrom: id,
        metadata: opts.metadata ?? src.metadata,
        envs: opts.envs ?? {},
        timeoutMs: opts.timeoutMs ?? src.timeoutMs,
        allowInternetAccess: src.allowInternetAccess,
        // the source runs without the volumes that were already gone when it was created: so does the child
        allowMissingVolumes: true,
      });
      return { child, pauseMs: snap.pauseMs };
    } finally {
      ctx.snapshots.delete(snap.id);
      ctx.layersReleased();
    }
  }
}
