/**
 * What a user would otherwise do with the same QEMU and the same image, measured the same way (to
 * the guest agent answering): cold boot, QEMU's standard restore from a full migration stream, and
 * the floor of any restore (a QEMU process spawned with -incoming defer, plus loading device state).
 */
import fs from 'node:fs';
import path from 'node:path';
import { cloneFile, createOverlay, Vm, type HostProfile, type TemplateInfo, type VmSpec } from '@nullspace/runtime';

export interface BaselineCtx {
  profile: HostProfile;
  template: TemplateInfo;
  /** Scratch directory on the data disk (removed by the caller). */
  dir: string;
}

let seq = 0;

function spec(ctx: BaselineCtx, name: string, dir: string): VmSpec {
  const t = ctx.template;
  return {
    id: `bench-${name}-${process.pid}-${seq++}`,
    memoryMiB: t.memoryMiB,
    vcpus: t.vcpus,
    kernel: t.image.kernel,
    initrd: t.image.initrd,
    cmdline: t.image.cmdline,
    ramFile: path.join(dir, 'mem'),
    disk: path.join(dir, 'disk.qcow2'),
    diskSizeBytes: t.image.diskSizeMiB * 1048576,
    runDir: path.join(dir, 'run'),
    consoleLog: false,
    allowInternetAccess: false,
  };
}

function freshDir(ctx: BaselineCtx, name: string): string {
  const d = path.join(ctx.dir, `${name}-${seq}`);
  fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  return d;
}

function emptyRam(file: string, mib: number): void {
  fs.closeSync(fs.openSync(file, 'w', 0o600));
  fs.truncateSync(file, mib * 1048576);
}

/** Boots the image from scratch to the agent answering. */
export async function coldBoot(ctx: BaselineCtx): Promise<number> {
  const dir = freshDir(ctx, 'boot');
  const s = spec(ctx, 'boot', dir);
  await createOverlay(ctx.template.image.rootDisk, s.disk);
  emptyRam(s.ramFile, s.memoryMiB);
  const t0 = performance.now();
  const vm = await Vm.launch(ctx.profile, s, false);
  try {
    const agent = await vm.connectAgent(180_000);
    await agent.call('sys.info');
    return performance.now() - t0;
  } finally {
    await vm.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * QEMU's standard save/restore: a full migration stream (all RAM) to a file, then a new QEMU fed
 * from it. Returns the save time, the stream size and the restore-to-agent time.
 */
export async function fullMigration(ctx: BaselineCtx): Promise<{ saveMs: number; bytes: number; restoreMs: number }> {
  const dir = freshDir(ctx, 'mig');
  const s = spec(ctx, 'migsrc', dir);
  // start from the template snapshot (a booted guest), as a sandbox would
  await cloneFile(ctx.template.memFile, s.ramFile);
  await createOverlay(ctx.template.disk, s.disk);
  const src = await Vm.launch(ctx.profile, s, true);
  const stream = path.join(dir, 'stream');
  let saveMs: number;
  try {
    await src.restoreState(ctx.template.stateFile);
    await (await src.connectAgent(30_000)).call('sys.info');
    src.disconnectAgent();
    const t0 = performance.now();
    await src.qmp.execute('stop');
    await src.saveState(stream, { includeRam: true });
    saveMs = performance.now() - t0;
  } finally {
    await src.kill();
  }
  const bytes = fs.statSync(stream).size;
  const dir2 = freshDir(ctx, 'migdst');
  const d = spec(ctx, 'migdst', dir2);
  await createOverlay(s.disk, d.disk);
  emptyRam(d.ramFile, d.memoryMiB);
  const t1 = performance.now();
  const dst = await Vm.launch(ctx.profile, d, true);
  try {
    await dst.restoreState(stream, { includeRam: true });
    await (await dst.connectAgent(30_000)).call('sys.info');
    return { saveMs, bytes, restoreMs: performance.now() - t1 };
  } finally {
    await dst.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(dir2, { recursive: true, force: true });
  }
}

/** The floor of every restore: spawn QEMU with -incoming defer to QMP ready, then load device state. */
export async function floor(ctx: BaselineCtx): Promise<{ spawnMs: number; stateMs: number; totalMs: number }> {
  const dir = freshDir(ctx, 'floor');
  const s = spec(ctx, 'floor', dir);
  await cloneFile(ctx.template.memFile, s.ramFile);
  await createOverlay(ctx.template.disk, s.disk);
  const t0 = performance.now();
  const vm = await Vm.launch(ctx.profile, s, true);
  const t1 = performance.now();
  try {
    await vm.restoreState(ctx.template.stateFile, { start: false });
    const t2 = performance.now();
    return { spawnMs: t1 - t0, stateMs: t2 - t1, totalMs: t2 - t0 };
  } finally {
    await vm.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
