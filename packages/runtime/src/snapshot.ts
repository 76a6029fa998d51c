import fs from 'node:fs';
import { NsError, wrapError } from './errors.js';
import { run } from './exec.js';
import path from 'node:path';
import type { VmSpec } from './qemu.js';
import { cloneRegularFile, fsyncDir, fsyncFile, fsyncFileAsync } from './storage.js';

/** What a capture needs of a VM (runtime/src/vm.ts `Vm`). */
export interface CaptureVm {
  readonly spec: VmSpec;
  readonly gone: boolean;
  readonly qmp: { execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> };
  saveState(stateFile: string): Promise<void>;
}

export interface CaptureOptions {
  resume: boolean;
  /** fsync the RAM image and disk layer (hibernation: they are then the only copy). */
  durable?: boolean;
  virtualSizeBytes: number;
  ownerUid?: number | undefined;
  /** Called after the disk layer exists and before the VM switches onto it (record it durably here). */
  beforeSwitch?: () => void | Promise<void>;
  /** Called when the switch failed, to undo `beforeSwitch`. */
  switchFailed?: () => void | Promise<void>;
  /** Called right after the VM stopped (fault injection in tests). */
  onPaused?: () => Promise<void>;
}

export interface CaptureTargets {
  /** Where the RAM image goes (a reflink copy of the VM's RAM file at the paused instant). */
  mem: string;
  /** Device state (x-ignore-shared migration stream). */
  state: string;
  /** The frozen disk layer: a reflink copy of the active overlay at the paused instant. */
  disk: string;
  /**
   * The VM's next active overlay, backed by `disk` (its path is written in the overlay's header, so
   * a later restart of this VM opens the frozen copy, never the old overlay).
   */
  nextOverlay: string;
}

export interface CaptureResult {
  /** How long the guest was stopped. */
  pauseMs: number;
  /** The whole capture, pre-flush included. */
  totalMs: number;
  /** Milliseconds per step (diagnostic). */
  phases: Record<string, number>;
}

/** Runs `fn`; if it throws, also records the failure (the VM may be gone: fail with its exit reason). */
async function step<T>(vm: CaptureVm, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (vm.gone) throw new NsError('vm_exited', `${what}: the VM exited during the snapshot`, { cause: err });
    throw wrapError(err, what, 'snapshot_failed');
  }
}

/**
 * Captures guest memory and the mutable root disk at one paused instant, with a pause that does not
 * grow with the RAM size:
 *
 *  - before the pause: the RAM file's dirty pages are written back while the guest runs, and the
 *    next overlay is created;
 *  - paused (`stop` also drains and flushes the block layer): device state out, reflink copy of the
 *    RAM file (only pages dirtied since the pre-flush are written), reflink copy of the active
 *    overlay, switch the VM to the next overlay (`blockdev-snapshot`);
 *  - `cont` when `resume` (a reusable snapshot or a fork keep the source running); otherwise the
 *    VM stays stopped (hibernation quits it next).
 *
 * On any failure the VM is resumed (when `resume`) and the partial files are removed; the VM keeps
 * its old overlay unless the switch itself succeeded.
 */
export async function captureSnapshot(vm: CaptureVm, to: CaptureTargets, opts: CaptureOptions): Promise<CaptureResult> {
  const t0 = Date.now();
  const cleanupFiles = () => {
    for (const f of [to.mem, to.state, to.disk, to.nextOverlay]) fs.rmSync(f, { force: true });
  };
  let stopped = false;
  let switched = false;
  let recorded = false;
  let pauseStart = 0;
  const phases: Record<string, number> = {};
  let mark = Date.now();
  const lap = (name: string) => {
    const now = Date.now();
    phases[name] = now - mark;
    mark = now;
  };
  try {
    // both while the guest runs, side by side: the RAM file's dirty pages written back (so that
    // the reflink in the pause has little left to write) and the next overlay created; both settle
    // before a failure is reported (the clean-up must not race the other)
    const prepared = await Promise.allSettled([
      step(vm, 'flushing guest RAM before the pause', () => fsyncFileAsync(vm.spec.ramFile)),
      step(vm, 'creating the next overlay', async () => {
        // made in a directory of root's, owned through its descriptor, then moved into the sandbox's
        // directory: nothing the sandbox's uid planted there is followed
        const staged = path.join(path.dirname(to.mem), 'next.qcow2');
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-F', 'qcow2', '-b', to.disk, staged, String(opts.virtualSizeBytes)], {
          errorCode: 'snapshot_failed',
        });
        const fd = fs.openSync(staged, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        try {
          if (opts.ownerUid !== undefined) fs.fchownSync(fd, opts.ownerUid, opts.ownerUid);
          fs.fchmodSync(fd, 0o600);
        } finally {
          fs.closeSync(fd);
        }
        fs.renameSync(staged, to.nextOverlay);
      }),
    ]);
    for (const r of prepared) if (r.status === 'rejected') throw r.reason;
    lap('flushAndOverlayMs');
    pauseStart = Date.now();
    await step(vm, 'pausing the VM', () => vm.qmp.execute('stop'));
    stopped = true;
    await opts.onPaused?.();
    await step(vm, 'saving device state', async () => {
      await vm.saveState(to.state);
      fs.chmodSync(to.state, 0o444);
    });
    lap('stopAndStateMs');
    await step(vm, 'copying guest RAM', async () => cloneRegularFile(vm.spec.ramFile, to.mem, 0o444));
    await step(vm, 'copying the disk layer', async () => cloneRegularFile(vm.spec.disk, to.disk, 0o444));
    lap('cloneMs');
    const node = `disk${Date.now().toString(36)}`;
    await opts.beforeSwitch?.();
    recorded = true;
    await step(vm, 'switching to the next overlay', async () => {
      await vm.qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': node,
        discard: 'unmap',
        file: { driver: 'file', filename: to.nextOverlay },
        backing: null,
      });
      await vm.qmp.execute('blockdev-snapshot', { node: vm.spec.diskNode ?? 'root', overlay: node });
    });
    switched = true;
    vm.spec.disk = to.nextOverlay;
    vm.spec.diskNode = node;
    if (opts.durable) {
      await step(vm, 'syncing the captured files', async () => {
        for (const f of [to.mem, to.disk, to.state]) fsyncFile(f);
        fsyncDir(path.dirname(to.disk));
        fsyncDir(path.dirname(to.mem));
      });
    }
    lap('switchMs');
    if (opts.resume) {
      await step(vm, 'resuming the VM', () => vm.qmp.execute('cont'));
      stopped = false;
    }
    lap('contMs');
    const pauseMs = Date.now() - pauseStart;
    return { pauseMs, totalMs: Date.now() - t0, phases };
  } catch (err) {
    if (stopped && opts.resume && !vm.gone) await vm.qmp.execute('cont').catch(() => {});
    if (!switched) {
      if (recorded) await opts.switchFailed?.();
      cleanupFiles();
    } else {
      // the VM's overlay now backs onto to.disk (its header names it): it stays
      for (const f of [to.mem, to.state]) fs.rmSync(f, { force: true });
    }
    throw err;
  }
}
