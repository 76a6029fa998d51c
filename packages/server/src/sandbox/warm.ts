import { randomBytes, randomUUID } from 'node:crypto';
import type { CleanupStack, TemplateInfo } from '@nullspace/runtime';
import type { SandboxContext } from './context.js';
import { guest } from './guest.js';
import { NotWarmable, WarmPool, type WarmSlot } from './pool.js';
import type { Restores } from './restore.js';
import type { RestoreSource, Sources } from './sources.js';

/** The template whose sandboxes the warm pool prepares ahead of demand. */
export const WARM_TEMPLATE = 'base';

/**
 * Warm slots: sandboxes-to-be, restored and running ahead of demand, so that a create skips
 * preparing files, spawning QEMU, loading the state and the guest's first (cold) run of the agent's
 * paths, which under TCG costs more than all the rest. Two kinds:
 *  - of the `base` template (NULLSPACE_WARM_POOL of them): each has answered one `sys.init` (a fresh
 *    entropy reseed, throwaway identity) and started one (unrecorded) shell already;
 *  - of reusable snapshots (NULLSPACE_SNAPSHOT_POOL snapshots, one slot each): the most recently
 *    created or used ones. Each has answered one `sys.init` that leaves the snapshot's user
 *    processes frozen (they stay as captured until the slot is taken).
 * A create only applies its own `sys.init`. No user code runs in a slot before it is taken, and
 * everything a user could see (clock, entropy, hostname, machine id, boot id, environment) is set by
 * the create's `sys.init` before anything of theirs runs. Only creates with the network on and
 * without volumes use them (snapshots with volumes are not kept warm); they are not sandboxes until
 * taken (not listed, not counted by admission).
 */
export class WarmSlots {
  private readonly pool: WarmPool;
  /** Reusable snapshots kept warm, most recently created or used first. */
  private readonly hot: string[] = [];
  /** Snapshots found unfit to be kept warm (their agent cannot keep user processes frozen, ...). */
  private readonly unwarmable = new Set<string>();
  /** How many snapshots were forgotten (deleted) so far. */
  private forgets = 0;

  constructor(
    private readonly ctx: SandboxContext,
    private readonly sources: Sources,
    private readonly restores: Restores,
  ) {
    this.pool = new WarmPool(
      (key, id, cleanup) => (key === null ? this.prepareTemplate(id, cleanup) : this.prepareSnapshot(id, key, cleanup)),
      ctx.log,
      (key) => key === null || this.hot.includes(key),
      (key, err) => {
        if (key === null) return;
        this.unhot(key);
        // not tried again on every create from it (another failure is tried again on the next)
        if (err instanceof NotWarmable) this.unwarmable.add(key);
      },
    );
  }

  get warmPool(): { size: number; ready: number; preparing: number } {
    return { size: this.ctx.config.warmPoolSize, ...this.pool.counts((key) => key === null) };
  }

  get snapshotPool(): { size: number; ready: number; preparing: number; snapshots: string[] } {
    return { size: this.ctx.config.snapshotPoolSize, ...this.pool.counts((key) => key !== null), snapshots: [...this.hot] };
  }

  refill(): void {
    if (this.ctx.closing) return;
    if (this.ctx.config.warmPoolSize > 0) {
      let template: TemplateInfo | undefined;
      try {
        template = this.ctx.host.template(WARM_TEMPLATE);
      } catch {
        // no usable base template on this host
      }
      while (template && this.pool.slotsOf(null) < this.ctx.config.warmPoolSize) this.pool.start(null);
    }
    for (const snapId of this.hot) {
      if (this.pool.slotsOf(snapId) === 0) this.pool.start(snapId);
    }
  }

  private async prepareTemplate(id: string, cleanup: CleanupStack): Promise<WarmSlot> {
    const src = await this.sources.template(this.ctx.host.template(WARM_TEMPLATE), {});
    const vm = await this.restores.launch(id, src, true, cleanup, false, {}, true);
    await vm.restoreState(src.stateFile);
    const agent = await vm.connectAgent(15_000);
    await guest.init(agent, { hostname: id, machineId: randomBytes(16).toString('hex'), bootId: randomUUID(), envs: {} });
    // the guest's first process start runs cold: paid here, not by the user's first command
    await guest.warmup(agent);
    return { id, key: null, memFile: src.memFile, diskBacking: src.diskBacking, vm, spec: vm.spec, cleanup };
  }

  /** A slot of a reusable snapshot: restored, agent connected, identity set, user processes still frozen. */
  private async prepareSnapshot(id: string, snapId: string, cleanup: CleanupStack): Promise<WarmSlot> {
    let src: RestoreSource;
    // the collector waits while the layers are cloned and opened (as for a create)
    const releaseLayers = await this.ctx.layersLock.acquireRead();
    let vm;
    try {
      src = await this.sources.resolve({ template: '', snapshotId: snapId });
      if (src.volumes.length) throw new NotWarmable(`snapshot ${snapId} mounts volumes`);
      vm = await this.restores.launch(id, src, true, cleanup, false, {}, true);
      await vm.restoreState(src.stateFile);
    } finally {
      releaseLayers();
    }
    const agent = await vm.connectAgent(15_000);
    // an agent that predates `thaw: false` would ignore it and run the user's processes now
    const info = await guest.info(agent);
    if (!info.features?.includes('sys.init.thaw')) throw new NotWarmable(`the agent in snapshot ${snapId} cannot keep user processes frozen`);
    const r = await guest.init(agent, { hostname: id, machineId: randomBytes(16).toString('hex'), bootId: randomUUID(), envs: {} }, { thaw: false });
    // a capture whose freeze failed holds running processes: they would run in the slot now
    if (r.thawed !== false || r.frozen !== true) throw new NotWarmable(`snapshot ${snapId} was captured with its user processes running`);
    return { id, key: snapId, memFile: src.memFile, diskBacking: src.diskBacking, vm, spec: vm.spec, cleanup };
  }

  /** Puts a reusable snapshot first among those kept warm (the least recently used one may drop out). */
  async touch(snapId: string): Promise<void> {
    if (this.ctx.config.snapshotPoolSize <= 0 || this.unwarmable.has(snapId)) return;
    // (a create that resolved it before a concurrent delete must not bring it back: nor may one
    // whose lookup raced with a delete)
    const forgets = this.forgets;
    if (!(await this.ctx.snapshots.get(snapId)) || this.forgets !== forgets) return;
    const i = this.hot.indexOf(snapId);
    if (i >= 0) this.hot.splice(i, 1);
    this.hot.unshift(snapId);
    for (const old of this.hot.splice(this.ctx.config.snapshotPoolSize)) this.unhot(old);
  }

  /** Stops keeping a snapshot warm; its ready slot goes (one being prepared goes when it is done). */
  unhot(snapId: string): void {
    const i = this.hot.indexOf(snapId);
    if (i >= 0) this.hot.splice(i, 1);
    this.pool.discard(snapId);
  }

  /** A deleted snapshot: never warm again, and forgotten. */
  forget(snapId: string): void {
    this.forgets++;
    this.unhot(snapId);
    this.unwarmable.delete(snapId);
  }

  /** A warm slot for `src`, or undefined (the create then prepares its own VM). */
  take(src: RestoreSource, allowInternetAccess: boolean): WarmSlot | undefined {
    let found: WarmSlot | undefined;
    // slots have the network on and no volumes: other creates neither use nor refresh them; the
    // template slots are of `base` only (a create from another template leaves them alone)
    if (!src.volumes.length && allowInternetAccess && (src.snapshotId !== null || src.template === WARM_TEMPLATE)) {
      if (src.snapshotId !== null && src.snapshotKind === 'reusable') {
        void this.touch(src.snapshotId).then(
          () => this.refill(),
          () => {},
        );
      }
      // the same files: the template was not rebuilt, the snapshot's chain not flattened since
      found = this.pool.take(src.snapshotId, src.memFile, src.diskBacking);
    }
    this.refill();
    return found;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
