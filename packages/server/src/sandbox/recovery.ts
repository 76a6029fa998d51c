import fs from 'node:fs';
import { errorMessage, type VmHandle } from '@nullspace/runtime';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SandboxContext } from './context.js';
import type { Guests } from './guest.js';
import { isTerminal, RECOVERABLE_STATES } from './lifecycle.js';
import type { Watcher } from './watch.js';

/**
 * What a (re)started server finds: QEMU processes are started detached and outlive the server. Each
 * record in a state that may have a VM or an interrupted operation goes where the lifecycle says
 * (`recover` in lifecycle.ts): a running VM is taken over (QMP and agent reconnected, its record
 * made to agree with it), the others end or go back to paused. QEMU processes of this data dir that
 * no record owns are killed, uid claims no sandbox holds are freed.
 */
export class Recovery {
  constructor(
    private readonly ctx: SandboxContext,
    private readonly guests: Guests,
    private readonly watcher: Watcher,
  ) {}

  async run(): Promise<void> {
    const { ctx } = this;
    // VMs run as their own uids: they may traverse (not list) the data dir to reach their own directory
    fs.mkdirSync(ctx.layout.sandboxes, { recursive: true });
    fs.chmodSync(ctx.layout.root, 0o711);
    fs.chmodSync(ctx.layout.sandboxes, 0o711);
    // layers are read only by the server (root): QEMU gets them opened, or reflinked into its directory
    fs.mkdirSync(ctx.layout.staging, { recursive: true, mode: 0o700 });
    fs.rmSync(ctx.layout.staging, { recursive: true, force: true });
    fs.mkdirSync(ctx.layout.staging, { mode: 0o700 });
    const adopted = new Set<number>();
    const adoptedUids = new Set<number>();
    for (const found of await ctx.store.inStates(RECOVERABLE_STATES)) {
      const vm = found.vmSpec && found.pid ? await ctx.vms.adopt(found.vmSpec, found.pid) : undefined;
      // a hibernation of *this* attempt: newer than the sandbox's move into `hibernating` (older ones
      // are kept after resumes and must not count)
      const since = found.state === 'hibernating' ? await ctx.store.lastTransitionAt(found.id, 'hibernating') : undefined;
      const recorded = since !== undefined && (await ctx.snapshots.hibernations(found.id)).some((h) => h.createdAt >= since);
      const live = ctx.live.begin(found.id);
      if (vm) {
        live.setVm(vm);
        live.own('kill vm', () => vm.kill());
        await ctx.egress.bind(live);
      }
      const { rec, step } = await ctx.lifecycle.applyStep(found, { type: 'recover', at: Date.now(), vmAlive: vm !== undefined, hibernationRecorded: recorded });
      if (step.adopt && vm) {
        adopted.add(vm.pid);
        if (rec.vmSpec?.runAsUid !== undefined) {
          adoptedUids.add(rec.vmSpec.runAsUid);
          ctx.vms.claimUid(rec.id, rec.vmSpec);
          live.own('release uid', () => ctx.vms.releaseUid(rec.id, rec.vmSpec));
        }
        live.own('remove sandbox files', () => ctx.vms.removeFiles(rec.id));
        // already running: counted, never refused (a full host must not stop the server from starting)
        const reservation = ctx.admission.reserve(rec.memoryMiB, { force: true });
        live.own('release admission', reservation.release);
        await this.reconcile(rec, vm);
        this.watcher.attach(live, { adopted: true });
        ctx.log.info({ sandboxId: rec.id, pid: vm.pid }, 're-adopted running sandbox');
        // reconnect now: sys.init also thaws user processes an interrupted snapshot left frozen
        void ctx
          .record(rec.id)
          .then((r) => this.guests.agent(rec.id, r))
          .catch((err: unknown) => ctx.log.warn({ sandboxId: rec.id, err: errorMessage(err) }, 'agent of a re-adopted sandbox unavailable'));
        continue;
      }
      await live.teardown();
      ctx.log.warn({ sandboxId: rec.id, from: found.state, to: rec.state }, 'recovered sandbox after restart');
    }
    // internal fork captures live only while their child starts: any found now were interrupted
    for (const s of await ctx.snapshots.all()) if (s.kind === 'fork') await ctx.snapshots.delete(s.id);
    await this.killOrphans(adopted);
    ctx.vms.sweepUids(adoptedUids);
  }

  /**
   * Makes a re-adopted sandbox's record agree with its QEMU: a server that died in the middle of a
   * snapshot may have left the VM stopped, or switched to its next overlay without recording it.
   */
  private async reconcile(rec: SandboxRecord, vm: VmHandle): Promise<void> {
    const { ctx } = this;
    try {
      const active = await vm.activeDisk();
      // (what QEMU reports is only taken for one of this sandbox's own overlays: its uid may lie)
      if (rec.vmSpec && active.file !== rec.vmSpec.disk) {
        if (!ctx.layout.isOverlayOf(rec.id, active.file)) {
          ctx.log.error({ sandboxId: rec.id, disk: active.file }, "QEMU reports a disk that is not one of the sandbox's overlays: not recorded");
        } else {
          const parent = active.backingFile ? await ctx.snapshots.layerByPath(active.backingFile) : undefined;
          vm.spec.disk = active.file;
          vm.spec.diskNode = active.node;
          await ctx.store.patch(rec.id, { vmSpec: vm.spec, ...(parent ? { diskParentLayer: parent.id } : {}) });
          ctx.log.warn({ sandboxId: rec.id, disk: active.file }, 'recorded the overlay an interrupted snapshot had switched to');
        }
      }
      if (rec.state === 'running' && !(await vm.isRunning())) {
        await vm.cont();
        ctx.log.warn({ sandboxId: rec.id }, 'resumed a VM left paused by an interrupted snapshot');
      }
    } catch (err) {
      ctx.log.error({ sandboxId: rec.id, err: errorMessage(err) }, 'reconciling a re-adopted sandbox failed');
    }
  }

  /** QEMU processes of this data dir that no record owns (e.g. a crash between spawn and record). */
  private async killOrphans(adopted: Set<number>): Promise<void> {
    const { ctx } = this;
    for (const { pid, sandboxId: id } of ctx.vms.processes()) {
      if (adopted.has(pid)) continue;
      const rec = await ctx.store.get(id);
      if (rec && ctx.live.has(id)) continue;
      ctx.log.warn({ sandboxId: id, pid }, 'killing an orphaned QEMU process of this data dir');
      ctx.vms.killProcess(pid);
      if (!rec || isTerminal(rec.state)) ctx.vms.removeFiles(id);
    }
  }
}
