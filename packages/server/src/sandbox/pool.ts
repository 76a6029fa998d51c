import { CleanupStack, errorMessage, type VmHandle, type VmSpec } from '@nullspace/runtime';
import type { Logger } from '../log.js';
import { newId } from '../util.js';

/** A sandbox-to-be restored ahead of demand: its VM runs, its agent is connected; not a sandbox until taken. */
export interface WarmSlot {
  id: string;
  /** What it was restored from: a reusable snapshot id, or (null) the `base` template. */
  key: string | null;
  memFile: string;
  diskBacking: string;
  vm: VmHandle;
  spec: VmSpec;
  /** Everything the slot holds (VM, files, uid): run when it is discarded, or by the sandbox that takes it. */
  cleanup: CleanupStack;
}

/** Why a source is not kept warm, for good (see `WarmPool.fill`). */
export class NotWarmable extends Error {
  constructor(why: string) {
    super(`${why}: not kept warm`);
  }
}

/** Prepares a slot of `key` under sandbox id `id`, registering what it acquires on `cleanup`. */
export type PrepareSlot = (key: string | null, id: string, cleanup: CleanupStack) => Promise<WarmSlot>;

/**
 * Slots ready and being prepared, by key (a snapshot id; null: the template). The pool knows nothing
 * of VMs: `prepare` (injected) makes a slot; the pool keeps it until it is taken or discarded, and
 * runs its cleanup when it is discarded.
 */
export class WarmPool {
  private readonly ready: WarmSlot[] = [];
  /** Slots being prepared, by key. */
  private readonly preparing = new Map<Promise<void>, string | null>();
  private closing = false;

  constructor(
    private readonly prepare: PrepareSlot,
    private readonly log: Logger,
    /** Whether a slot of `key` that just finished is still wanted (a snapshot deleted meanwhile is not). */
    private readonly wanted: (key: string | null) => boolean,
    /** Told when preparing a slot of `key` failed (`err` may be a NotWarmable). */
    private readonly failed: (key: string | null, err: unknown) => void,
  ) {}

  /** Slots ready and being prepared, of the keys `of` accepts. */
  counts(of: (key: string | null) => boolean): { ready: number; preparing: number } {
    return { ready: this.ready.filter((s) => of(s.key)).length, preparing: [...this.preparing.values()].filter(of).length };
  }

  /** Slots of `key`, ready or being prepared. */
  slotsOf(key: string | null): number {
    const { ready, preparing } = this.counts((k) => k === key);
    return ready + preparing;
  }

  /** Starts preparing one slot of `key` in the background. */
  start(key: string | null): void {
    if (this.closing) return;
    const id = newId('sbx');
    const cleanup = new CleanupStack();
    const preparing: Promise<void> = this.prepare(key, id, cleanup)
      .then(
        async (slot) => {
          if (this.closing || !this.wanted(key)) await cleanup.run();
          else this.ready.push(slot);
        },
        async (err: unknown) => {
          await cleanup.run();
          this.failed(key, err);
          this.log.warn({ snapshotId: key ?? undefined, err: errorMessage(err) }, 'preparing a warm VM failed');
        },
      )
      .finally(() => this.preparing.delete(preparing));
    this.preparing.set(preparing, key);
  }

  /**
   * Takes a ready slot of `key` whose files are still `memFile`/`diskBacking` and whose VM is alive
   * with its agent connected; other slots of `key` it meets (their QEMU died, or their source
   * changed: a rebuilt template, a flattened chain) are discarded.
   */
  take(key: string | null, memFile: string, diskBacking: string): WarmSlot | undefined {
    let found: WarmSlot | undefined;
    for (let i = 0; i < this.ready.length && !found; i++) {
      const slot = this.ready[i]!;
      if (slot.key !== key) continue;
      this.ready.splice(i--, 1);
      if (!slot.vm.gone && slot.vm.agent && slot.memFile === memFile && slot.diskBacking === diskBacking) found = slot;
      else void slot.cleanup.run();
    }
    return found;
  }

  /** Discards the ready slots of `key` (one being prepared goes when it is done, unless still wanted). */
  discard(key: string | null): void {
    for (let j = this.ready.length - 1; j >= 0; j--) {
      if (this.ready[j]!.key === key) void this.ready.splice(j, 1)[0]!.cleanup.run();
    }
  }

  /** Discards every slot and waits for those being prepared to finish (and clean up). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.ready.splice(0).map((slot) => slot.cleanup.run()));
    // ones still being prepared clean up when they finish (their steps have timeouts): wait for them,
    // so that nothing of theirs (a QEMU, a uid claim) outlives the server
    await Promise.allSettled([...this.preparing.keys()]);
  }
}
