import { errorMessage } from '@nullspace/runtime';
import { isTerminal } from './lifecycle.js';
import type { SandboxContext } from './context.js';
import type { LiveSandbox } from './live.js';

/** How often a VM that QEMU stopped on a full host disk is tried again. */
const DISK_FULL_RETRY_MS = 1000;

/** Watches the VMs of running sandboxes: a VM that dies fails its sandbox; one stopped on a full disk is resumed. */
export class Watcher {
  constructor(private readonly ctx: SandboxContext) {}

  /** Starts watching a running sandbox's VM (its live entry now counts as attached). */
  attach(live: LiveSandbox, opts: { adopted?: boolean } = {}): void {
    const { ctx } = this;
    const id = live.id;
    const vm = live.vm;
    if (ctx.closed) {
      // an operation that outlived close(): the VM runs on, the next server re-adopts it
      live.detach();
      return;
    }
    live.attached = true;
    this.watchDiskFull(live, opts.adopted === true);
    void vm.exited.then((exit) => {
      if (exit.kind !== 'died' || ctx.closing) return;
      ctx.locks
        .run(id, async () => {
          if (ctx.live.get(id) !== live) return;
          const rec = await ctx.store.get(id);
          if (!rec || isTerminal(rec.state) || rec.state === 'killing') {
            await live.teardown();
            return;
          }
          await ctx.lifecycle.apply(rec, { type: 'vmExited', at: Date.now(), reason: `the VM exited unexpectedly: ${exit.detail}` });
          ctx.log.warn({ sandboxId: id, detail: exit.detail }, 'sandbox VM died');
        })
        .catch((err: unknown) => ctx.log.error({ sandboxId: id, err: errorMessage(err) }, 'recording a dead VM failed'));
    });
  }

  /**
   * A guest write that finds the host disk full stops the VM (QEMU's `werror=enospc`: the request is
   * kept and retried on `cont`, so the guest sees no error and loses nothing). Such a VM is resumed
   * as soon as the write can succeed: tried every second (a retry that fails again just stops it
   * again), under the sandbox's lock so that it never meets a capture's own pause. A VM that a
   * restarted server re-adopts (`adopted`) is checked at once: it may have stopped meanwhile.
   */
  private watchDiskFull(live: LiveSandbox, adopted: boolean): void {
    const { ctx } = this;
    const id = live.id;
    const vm = live.vm;
    const stopTimer = () => {
      clearInterval(live.diskFullTimer);
      live.diskFullTimer = undefined;
    };
    // the episode ends once the VM has stayed running for a whole period (a resumed write that
    // fails again stops it again at once)
    let runningSince = 0;
    const retry = () =>
      ctx.locks.run(id, async () => {
        if (ctx.closing || ctx.live.get(id) !== live || vm.gone) return stopTimer();
        const status = await vm.status();
        if (status === 'io-error') {
          runningSince = 0;
          await vm.cont();
        } else if (!runningSince) {
          runningSince = Date.now();
        } else {
          stopTimer();
          ctx.log.info({ sandboxId: id }, 'VM running again after a full host disk');
        }
      });
    const start = () => {
      runningSince = 0;
      if (live.diskFullTimer || ctx.closing) return;
      ctx.log.warn({ sandboxId: id }, 'the host disk is full: QEMU stopped the VM on a guest write; it resumes when space is freed');
      live.diskFullTimer = setInterval(() => {
        retry().catch((err: unknown) => ctx.log.warn({ sandboxId: id, err: errorMessage(err) }, 'resuming a VM stopped on a full disk failed'));
      }, DISK_FULL_RETRY_MS);
      live.diskFullTimer.unref();
    };
    vm.onStoppedOnIoError(start);
    if (adopted) {
      vm.status()
        .then((status) => status === 'io-error' && start())
        .catch(() => {});
    }
  }
}
