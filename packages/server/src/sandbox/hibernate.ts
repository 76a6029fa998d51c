import { errorMessage, NsError, wrapError } from '@nullspace/runtime';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { Captures } from './capture.js';
import type { Chains } from './chains.js';
import type { SandboxContext } from './context.js';
import type { Guests } from './guest.js';
import { remainingOnHibernate } from './lifecycle.js';
import type { Restores } from './restore.js';
import type { Sources } from './sources.js';
import type { Watcher } from './watch.js';

/** Hibernation snapshots kept per sandbox (the latest is the one it resumes from). */
export const KEEP_HIBERNATIONS = 3;

/** Hibernate (memory and disk to durable storage, the VM stops) and resume (the same sandbox back). */
export class Hibernation {
  constructor(
    private readonly ctx: SandboxContext,
    private readonly captures: Captures,
    private readonly chains: Chains,
    private readonly sources: Sources,
    private readonly restores: Restores,
    private readonly guests: Guests,
    private readonly watcher: Watcher,
  ) {}

  /**
   * Hibernates a running sandbox: its memory and disk are captured at one instant to durable
   * storage as a `hibernate` snapshot, then its VM stops (no QEMU process, no RAM left). The
   * sandbox keeps its id, metadata and remaining timeout, and is `paused` until resumed.
   * Hibernating a paused sandbox returns its latest hibernation snapshot.
   */
  async hibernate(id: string, reason = 'hibernated by request', opts: { byTimeout?: boolean } = {}): Promise<SnapshotRecord> {
    await this.ctx.record(id);
    return this.ctx.locks.run(id, () => this.hibernateHeld(id, reason, opts));
  }

  /** `hibernate`, for a caller that holds the sandbox's lock. */
  async hibernateHeld(id: string, reason: string, opts: { byTimeout?: boolean }): Promise<SnapshotRecord> {
    const { ctx } = this;
    let rec = await ctx.record(id);
    if (rec.state === 'paused') {
      const latest = (await ctx.snapshots.hibernations(id))[0];
      if (latest) return latest;
    }
    if (rec.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a running sandbox can be hibernated`, { details: { state: rec.state } });
    }
    const live = ctx.live.get(id);
    if (!live?.attached || !rec.vmSpec) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
    const vm = live.vm;
    // hibernated by its timeout: it resumes with its whole timeout again; otherwise with what was left
    const remainingMs = remainingOnHibernate(rec, opts.byTimeout === true, Date.now());
    rec = await ctx.lifecycle.apply(rec, { type: 'hibernate', reason, byTimeout: opts.byTimeout });
    ctx.faults.crash('crash-before-hibernate-capture');
    let snap: SnapshotRecord;
    try {
      snap = await ctx.layersLock.read(async () => this.captures.capture(await ctx.record(id), vm, 'hibernate', {}, false));
    } catch (err) {
      if (vm.gone) {
        // (its layers are released to the collector, as for any sandbox that ends)
        await ctx.lifecycle.apply(await ctx.record(id), { type: 'vmExited', at: Date.now(), reason: `the VM exited during hibernation: ${errorMessage(err)}` });
        throw err;
      }
      await ctx.lifecycle.apply(await ctx.record(id), { type: 'hibernateFailed', message: errorMessage(err) });
      throw err;
    }
    ctx.faults.crash('crash-after-hibernate-capture');
    await ctx.lifecycle.apply(await ctx.record(id), { type: 'hibernated', at: Date.now(), reason, remainingMs });
    ctx.log.info({ sandboxId: id, snapshotId: snap.id, reason }, 'sandbox hibernated');
    return snap;
  }

  /**
   * Resumes a paused sandbox as the same sandbox (same id, identity, metadata, remaining timeout)
   * from its latest hibernation snapshot, or from `snapshotId`, which must be that snapshot. A
   * running sandbox is returned as it is.
   */
  async resume(id: string, snapshotId?: string): Promise<SandboxRecord> {
    const { ctx } = this;
    await ctx.record(id);
    return ctx.locks.run(id, async () => {
      let rec = await ctx.record(id);
      const latest = (await ctx.snapshots.hibernations(id))[0];
      if (snapshotId !== undefined) {
        const snap = await this.sources.getSnapshot(snapshotId);
        if (snap.kind !== 'hibernate') {
          throw new NsError(
            'bad_request',
            `snapshot ${snap.id} is a ${snap.kind} snapshot: start a new sandbox from it with Sandbox.create(snapshot_id=...) instead of resuming`,
            { details: { snapshotId: snap.id, kind: snap.kind } },
          );
        }
        if (snap.sandboxId !== id) throw new NsError('bad_request', `snapshot ${snap.id} belongs to sandbox ${snap.sandboxId}, not ${id}`);
        if (latest && snap.id !== latest.id) {
          throw new NsError('snapshot_not_latest', `snapshot ${snap.id} is not the latest hibernation of sandbox ${id} (${latest.id} is)`, {
            details: { snapshotId: snap.id, latest: latest.id },
          });
        }
      }
      if (rec.state === 'running') return rec;
      if (rec.state !== 'paused' || !latest) {
        throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a paused sandbox can be resumed`, { details: { state: rec.state } });
      }
      const compat = this.sources.compatibility(latest);
      if (!compat.compatible) {
        throw new NsError(
          'snapshot_incompatible',
          `sandbox ${id} cannot be resumed on this host: ${compat.mismatches.map((m) => `${m.field} is ${m.snapshot} in its snapshot but ${m.host} here`).join('; ')}`,
          { details: { snapshotId: latest.id, mismatches: compat.mismatches } },
        );
      }
      await ctx.layersLock.read(() => this.chains.boundSnapshotChain(latest));
      const reservation = ctx.admission.reserve(rec.memoryMiB);
      const live = ctx.live.begin(id);
      live.own('release admission', reservation.release);
      try {
        rec = await ctx.lifecycle.apply(rec, { type: 'resume' });
      } catch (err) {
        await live.teardown();
        throw err;
      }
      const phases: Record<string, number> = {};
      const t0 = Date.now();
      try {
        const vm = await ctx.layersLock.read(async () => {
          const src = await this.sources.snapshot(latest);
          await ctx.store.patch(id, { diskParentLayer: latest.diskLayer });
          // (a volume of its own can only be missing if it was at its creation: a volume a running or
          // paused sandbox mounts cannot be deleted)
          return this.restores.restore(id, src, rec.allowInternetAccess, live.cleanup, phases, true);
        });
        live.setVm(vm);
        await ctx.egress.bind(live);
        ctx.faults.crash('crash-during-resume');
        const agent = await vm.connectAgent(15_000);
        await this.guests.mountVolumes(await ctx.record(id), agent);
        await this.guests.init(await ctx.record(id), agent);
        const running = await ctx.lifecycle.apply(await ctx.record(id), { type: 'resumed', at: Date.now() });
        this.watcher.attach(live);
        ctx.log.info({ sandboxId: id, ms: Date.now() - t0, ...phases }, 'sandbox resumed');
        return running;
      } catch (err) {
        // (the teardown, its VM and files, is the step's own effect)
        await ctx.lifecycle.apply(await ctx.record(id), { type: 'resumeFailed', message: errorMessage(err) });
        throw wrapError(err, `resuming sandbox ${id}`, 'restore_failed');
      }
    });
  }
}
