import fs from 'node:fs';
import path from 'node:path';
import { allocatedBytes, checkQcow2Backing, errorMessage, fsyncDir, NsError, wrapError, type GuestAgent, type VmHandle } from '@nullspace/runtime';
import { checkFreeDisk } from '../admission.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SnapshotKind, SnapshotRecord } from '../store/snapshots.js';
import { newId } from '../util.js';
import type { Chains } from './chains.js';
import type { SandboxContext } from './context.js';
import { guest, type Guests } from './guest.js';
import type { WarmSlots } from './warm.js';

/** How long a capture waits for process starts (and file work, with volumes) already under way. */
const CAPTURE_DRAIN_MS = 10_000;

/** Snapshots: a running sandbox's memory and disk at one paused instant, recorded as layers. */
export class Captures {
  constructor(
    private readonly ctx: SandboxContext,
    private readonly guests: Guests,
    private readonly chains: Chains,
    private readonly warm: WarmSlots,
  ) {}

  /**
   * Captures a running sandbox's memory and disk at one paused instant into new layers and records
   * a snapshot of them. The sandbox is paused only for the capture and keeps running.
   */
  async snapshot(id: string, opts: { kind: SnapshotKind; metadata: Record<string, string> }): Promise<SnapshotRecord> {
    return this.ctx.locks.run(id, async () => {
      const rec = await this.ctx.record(id);
      if (rec.state !== 'running') {
        throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a running sandbox can be snapshotted`, { details: { state: rec.state } });
      }
      const live = this.ctx.live.get(id);
      if (!live?.attached || !rec.vmSpec) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
      const vm = live.vm;
      const snap = await this.ctx.layersLock.read(() => this.capture(rec, vm, opts.kind, opts.metadata, true));
      // the source's chain is compacted in the background, next under its lock: a long stream holds
      // up neither this call (nor a fork's child) nor, outside the layer lock, the collector
      void this.ctx.locks
        .run(id, () => this.chains.compact(id, vm))
        .catch((err: unknown) => this.ctx.log.error({ sandboxId: id, err: errorMessage(err) }, 'compacting the disk chain failed'));
      if (snap.kind === 'reusable') await this.ctx.lifecycle.apply(await this.ctx.record(id), { type: 'snapshotted', snapshotId: snap.id });
      // a new reusable snapshot is likely to be started from soon: one sandbox of it is prepared now
      if (snap.kind === 'reusable' && !snap.volumes.length) {
        await this.warm.touch(snap.id);
        this.warm.refill();
      }
      return snap;
    });
  }

  /**
   * Captures a sandbox's memory and disk at one paused instant into new layers and records a
   * snapshot of them (callers hold the sandbox lock and the layer lock's read side). User processes
   * stay frozen across the capture: a clone runs them again only after its sys.init (clock, entropy,
   * identity). With `keepRunning` the source resumes and thaws right after; otherwise it stays
   * stopped and frozen (hibernation quits it next), unless the capture fails.
   */
  async capture(rec: SandboxRecord, vm: VmHandle, kind: SnapshotKind, metadata: Record<string, string>, keepRunning: boolean): Promise<SnapshotRecord> {
    const id = rec.id;
    checkFreeDisk(this.ctx.config.dataDir, this.ctx.config.limits.minFreeDiskMiB, `capturing sandbox ${id}`);
    // process starts (and file work, with volumes) wait until the capture is over; those under way end first
    const drained = await this.ctx.gate.close(id, CAPTURE_DRAIN_MS);
    try {
      if (!drained && rec.volumes.length) {
        throw new NsError('volume_busy', `sandbox ${id}: a file transfer is still under way after ${CAPTURE_DRAIN_MS / 1000} s (its volumes cannot be unmounted for the capture meanwhile); retry when it is done`);
      }
      if (!drained) this.ctx.log.warn({ sandboxId: id }, 'capturing while a process start is still under way');
      return await this.captureGated(rec, vm, kind, metadata, keepRunning);
    } finally {
      this.ctx.gate.open(id);
    }
  }

  private async captureGated(rec: SandboxRecord, vm: VmHandle, kind: SnapshotKind, metadata: Record<string, string>, keepRunning: boolean): Promise<SnapshotRecord> {
    const { ctx } = this;
    const id = rec.id;
    const snapId = newId('snap');
    const staging = ctx.layout.stagingFor(snapId);
    fs.mkdirSync(staging, { mode: 0o700 });
    const ids = { mem: newId('lyr'), state: newId('lyr'), disk: newId('lyr') };
    const finalPath = { mem: ctx.layout.layerFile(ids.mem, 'mem'), state: ctx.layout.layerFile(ids.state, 'state') };
    const diskLayerPath = ctx.layout.layerFile(ids.disk, 'disk');
    const nextOverlay = ctx.layout.nextOverlay(id);
    let parent = rec.diskParentLayer;
    const switchRecorded = () => ctx.store.patch(id, { vmSpec: vm.spec, diskParentLayer: ids.disk });
    const phases: Record<string, number> = {};
    const freezeStart = Date.now();
    const agent = await this.guests.liveAgent(rec).catch((err: unknown) => {
      ctx.log.warn({ sandboxId: id, err: errorMessage(err) }, 'capture without freezing user processes: the agent is unavailable');
      return undefined;
    });
    let frozen = false;
    if (agent) {
      try {
        if (ctx.faults.is('freeze-fails')) throw new Error('fault injection: the freeze failed');
        await guest.freeze(agent);
        frozen = true;
      } catch (err) {
        ctx.log.warn({ sandboxId: id, err: errorMessage(err) }, 'capture without freezing user processes');
      }
    }
    phases.freezeMs = Date.now() - freezeStart;
    const thaw = async () => {
      if (frozen && !vm.gone) {
        frozen = false;
        const thawed: Promise<unknown> | undefined = ctx.faults.is('thaw-fails-after-capture')
          ? Promise.reject(new Error('fault injection: the thaw was lost'))
          : agent && guest.thaw(agent);
        await thawed?.catch((err: unknown) => {
          // the next use of the sandbox thaws them (liveAgent); a frozen sandbox never serves commands
          const live = ctx.live.get(id);
          if (live?.attached && live.vm === vm) live.needsThaw = true;
          ctx.log.error({ sandboxId: id, err: errorMessage(err) }, 'thawing user processes failed; retried on the next use');
        });
      }
    };
    if (rec.volumes.length) {
      if (!agent) {
        fs.rmSync(staging, { recursive: true, force: true });
        throw new NsError('agent_unavailable', `sandbox ${id}: its volumes cannot be unmounted for the capture: the agent is unavailable`);
      }
      try {
        await this.guests.unmountVolumes(rec, agent);
      } catch (err) {
        fs.rmSync(staging, { recursive: true, force: true });
        await thaw();
        throw err;
      }
    }
    const remount = async () => {
      if (rec.volumes.length && agent && !vm.gone) {
        await this.guests.mountVolumes(rec, agent as GuestAgent).catch((err: unknown) => ctx.log.error({ sandboxId: id, err: errorMessage(err) }, 'remounting volumes after a capture failed'));
      }
    };
    let ok = false;
    try {
      const res = await vm.capture(
        { mem: path.join(staging, 'mem'), state: path.join(staging, 'state'), disk: diskLayerPath, nextOverlay },
        {
          resume: keepRunning,
          durable: !keepRunning,
          virtualSizeBytes: rec.vmSpec!.diskSizeBytes,
          ownerUid: vm.spec.runAsUid,
          beforeSwitch: async () => {
            // the layer is a copy of an overlay the sandbox's uid could write: before anything of
            // root's opens its chain, its header must name only what this sandbox's disk rests on:
            // its own lineage, or a template build's disk (public). Its parent is the layer the
            // header names (null: a template), which a background stream may have moved down from
            // the recorded one.
            const lineage = await this.chains.lineage(rec);
            checkQcow2Backing(diskLayerPath, (backing) => {
              const layer = lineage.get(backing);
              parent = layer ?? null;
              return layer !== undefined || this.chains.isTemplateDisk(backing);
            });
            await ctx.snapshots.insertLayer({ id: ids.disk, kind: 'disk', path: diskLayerPath, parentId: parent, bytes: allocatedBytes(diskLayerPath), createdAt: Date.now() });
          },
          switchFailed: () => ctx.snapshots.deleteLayer(ids.disk),
          onPaused: async () => {
            if (ctx.faults.is(`kill-vm-during-${kind === 'hibernate' ? 'hibernate' : 'snapshot'}`)) {
              // as if it were killed from outside
              process.kill(vm.pid, 'SIGKILL');
              await vm.exited;
            }
          },
        },
      );
      await switchRecorded();
      if (keepRunning) {
        const thawStart = Date.now();
        await remount();
        await thaw();
        phases.thawMs = Date.now() - thawStart;
      }
      fs.renameSync(path.join(staging, 'mem'), finalPath.mem);
      fs.renameSync(path.join(staging, 'state'), finalPath.state);
      if (!keepRunning) fsyncDir(ctx.layout.layers);
      const snap: SnapshotRecord = {
        id: snapId,
        sandboxId: id,
        kind,
        template: rec.template,
        metadata,
        envs: rec.envs,
        memLayer: ids.mem,
        stateLayer: ids.state,
        diskLayer: ids.disk,
        vmConfig: {
          kernel: vm.spec.kernel,
          initrd: vm.spec.initrd,
          cmdline: vm.spec.cmdline,
          memoryMiB: vm.spec.memoryMiB,
          vcpus: vm.spec.vcpus,
          diskSizeBytes: vm.spec.diskSizeBytes,
          allowInternetAccess: vm.spec.allowInternetAccess,
          egress: rec.egress,
        },
        requirements: rec.requirements!,
        pauseMs: res.pauseMs,
        volumes: rec.volumes,
        createdAt: Date.now(),
      };
      await ctx.snapshots.transaction(async () => {
        const now = Date.now();
        await ctx.snapshots.insertLayer({ id: ids.mem, kind: 'mem', path: finalPath.mem, parentId: null, bytes: allocatedBytes(finalPath.mem), createdAt: now });
        await ctx.snapshots.insertLayer({ id: ids.state, kind: 'state', path: finalPath.state, parentId: null, bytes: allocatedBytes(finalPath.state), createdAt: now });
        await ctx.snapshots.insert(snap);
      });
      ok = true;
      ctx.log.info({ sandboxId: id, snapshotId: snapId, kind, pauseMs: res.pauseMs, ms: res.totalMs, ...res.phases, ...phases }, 'snapshot created');
      return snap;
    } catch (err) {
      // the VM may have moved to its next overlay before the failure: keep the record true
      if (vm.spec.disk === nextOverlay) await switchRecorded();
      for (const f of Object.values(finalPath)) fs.rmSync(f, { force: true });
      throw wrapError(err, `snapshot of sandbox ${id}`, 'snapshot_failed');
    } finally {
      // a failed capture leaves the source running, whatever it was for
      if (!ok && !keepRunning && !vm.gone) await vm.cont().catch(() => {});
      if (!ok) await remount();
      if (keepRunning || !ok) await thaw();
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
}
