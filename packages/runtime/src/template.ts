import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NsError } from './errors.js';
import { readJson, writeFileAtomic, acquireDirLock } from './fsutil.js';
import { Hasher } from './hash.js';
import type { HostProfile } from './host.js';
import type { ImageInfo } from './image/build.js';
import type { Progress } from './progress.js';
import { DEVICE_SET } from './qemu.js';
import { createOverlay, fsyncFile } from './storage.js';
import { waitForPrune } from './prunelock.js';
import { Vm } from './vm.js';

/**
 * Everything a memory snapshot needs from the host that restores it. Two snapshots' requirements
 * are compared field by field (see `compareRequirements`).
 */
export interface RestoreRequirements {
  qemuVersion: string;
  machine: string;
  accel: string;
  cpuModel: string;
  hostCpu: string;
  memoryMiB: number;
  vcpus: number;
  deviceSet: string;
  kernelRelease: string;
  agentVersion: string;
  template: string;
}

export interface TemplateInfo {
  name: string;
  dir: string;
  key: string;
  image: ImageInfo;
  memoryMiB: number;
  vcpus: number;
  /** Guest RAM at the template snapshot instant. Never modified: sandboxes map copies of it. */
  memFile: string;
  /** Device state (x-ignore-shared migration stream without RAM). */
  stateFile: string;
  /** Root disk layer at the snapshot instant (qcow2 on the image's root disk). */
  disk: string;
  requirements: RestoreRequirements;
  bootMs: number;
  builtAt: string;
  /** Its version among the builds registered under `name` (1, 2, ...): `name:version` names it. */
  version?: number;
  /** Disk size of its sandboxes (default: the image's). */
  diskSizeMiB?: number;
  /** What sandboxes of it get by default: environment (ENV); user and working directory of commands. */
  defaults?: { envs: Record<string, string>; user?: string | undefined; workdir?: string | undefined };
  /** A built template: what it was built from, its start command and ready check, ports it exposes. */
  build?: TemplateBuildRecord;
}

/** How a template built from a Dockerfile, an image or an SDK recipe came about (template.json). */
export interface TemplateBuildRecord {
  from: string;
  steps: number;
  start: { cmd: string; ready: Record<string, unknown> | null } | null;
  exposedPorts: number[];
  buildMs: number;
}

export function requirementsFor(profile: HostProfile, image: ImageInfo, memoryMiB: number, vcpus: number, template: string): RestoreRequirements {
  return {
    qemuVersion: profile.qemuVersion,
    machine: profile.machine,
    accel: profile.accel,
    cpuModel: profile.cpuModel,
    hostCpu: profile.hostCpu,
    memoryMiB,
    vcpus,
    deviceSet: DEVICE_SET,
    kernelRelease: image.kernelRelease,
    agentVersion: image.agentVersion,
    template,
  };
}

export interface RequirementMismatch {
  field: keyof RestoreRequirements;
  snapshot: string | number;
  host: string | number;
}

/**
 * Fields that the restoring side must match: the host's profile (QEMU version, machine type,
 * accelerator, CPU model, host CPU), the device set this build creates (`DEVICE_SET`, unless `host`
 * names another), and the VM shape when `host` gives one (memoryMiB, vcpus: the VM the restore would
 * start). `kernelRelease`, `agentVersion` and `template` are informative only.
 */
export function compareRequirements(snapshot: RestoreRequirements, host: Partial<RestoreRequirements>): RequirementMismatch[] {
  const want: Partial<RestoreRequirements> = { deviceSet: DEVICE_SET, ...host };
  const out: RequirementMismatch[] = [];
  for (const field of ['qemuVersion', 'machine', 'accel', 'cpuModel', 'hostCpu', 'memoryMiB', 'vcpus', 'deviceSet'] as const) {
    const h = want[field];
    if (h !== undefined && h !== snapshot[field]) out.push({ field, snapshot: snapshot[field], host: h });
  }
  return out;
}

function registryFile(cacheDir: string, name: string): string {
  return path.join(cacheDir, 'templates', `${name}.json`);
}

/**
 * The registry entry of a template name (`templates/<name>.json`): the directory `name` means now,
 * and every version registered under it (an entry written before versions existed is version 1).
 */
export interface TemplateRegistryEntry {
  dir: string;
  version: number;
  versions: Array<{ version: number; dir: string; registeredAt: string }>;
}

export function readRegistry(cacheDir: string, name: string): TemplateRegistryEntry | undefined {
  const reg = registryFile(cacheDir, name);
  if (!fs.existsSync(reg)) return undefined;
  const raw = readJson<Partial<TemplateRegistryEntry> & { dir: string }>(reg);
  const version = raw.version ?? 1;
  return { dir: raw.dir, version, versions: raw.versions ?? [{ version, dir: raw.dir, registeredAt: '' }] };
}

/**
 * Registers `dir` as what `name` means from now on: a new version, unless it already is the current
 * one (an unchanged rebuild). Earlier versions stay reachable as `name:version` while their
 * directories exist. Returns the version.
 */
export function registerTemplate(cacheDir: string, name: string, dir: string): number {
  const cur = readRegistry(cacheDir, name);
  if (cur?.dir === dir) return cur.version;
  const version = Math.max(0, ...(cur?.versions ?? []).map((v) => v.version)) + 1;
  const entry: TemplateRegistryEntry = { dir, version, versions: [...(cur?.versions ?? []), { version, dir, registeredAt: new Date().toISOString() }] };
  fs.mkdirSync(path.dirname(registryFile(cacheDir, name)), { recursive: true });
  writeFileAtomic(registryFile(cacheDir, name), JSON.stringify(entry, null, 2));
  return version;
}

/** Forgets every version of `name` (their directories go with the next cache prune, once unused). */
export function unregisterTemplate(cacheDir: string, name: string): boolean {
  const reg = registryFile(cacheDir, name);
  if (!fs.existsSync(reg)) return false;
  fs.rmSync(reg, { force: true });
  return true;
}

/** `name` or `name:version` split; undefined version: the current one. */
export function parseTemplateRef(ref: string): { name: string; version: number | undefined } {
  const m = /^([^:]+)(?::(\d{1,9}))?$/.exec(ref);
  return m ? { name: m[1]!, version: m[2] === undefined ? undefined : Number(m[2]) } : { name: ref, version: undefined };
}

/** The template registered under `name` (or `name:version`), if any. */
export function findTemplate(cacheDir: string, ref: string): TemplateInfo | undefined {
  const { name, version } = parseTemplateRef(ref);
  const entry = readRegistry(cacheDir, name);
  if (!entry) return undefined;
  const dir = version === undefined ? entry.dir : entry.versions.find((v) => v.version === version)?.dir;
  if (!dir) return undefined;
  const manifest = path.join(dir, 'template.json');
  if (!fs.existsSync(manifest)) return undefined;
  const info = readJson<TemplateInfo>(manifest);
  return { ...info, version: version ?? entry.version };
}

export function listTemplates(cacheDir: string): TemplateInfo[] {
  const dir = path.join(cacheDir, 'templates');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => findTemplate(cacheDir, f.slice(0, -5)))
    .filter((t): t is TemplateInfo => t !== undefined);
}

export interface TemplateBuildOptions {
  /** Registered name (defaults to the image's recipe name). */
  name: string;
  image: ImageInfo;
  profile: HostProfile;
  cacheDir: string;
  memoryMiB: number;
  vcpus: number;
  progress: Progress;
  force?: boolean;
}

const SNAPSHOT_RECIPE = 2; // 2: warm-up through sys.warmup (nothing recorded in the agent's process table)

/** The warm-up command (any POSIX shell: bash when the image has it, else sh). */
const WARMUP = [
  "if command -v python3 >/dev/null 2>&1; then python3 -c 'import json, os, subprocess, sys' || exit 1; fi",
  'if command -v bash >/dev/null 2>&1; then bash -c true || exit 1; fi',
  'if command -v sync >/dev/null 2>&1; then sync; fi',
].join('\n');

/**
 * Boots the image once and saves a template snapshot (RAM file + device state + disk layer), so that
 * creating a sandbox is a copy-on-write restore instead of a boot. Cached by image, host profile and
 * resources; registered under `name`.
 */
export async function buildTemplate(opts: TemplateBuildOptions): Promise<TemplateInfo> {
  const { image, profile, progress } = opts;
  const requirements = requirementsFor(profile, image, opts.memoryMiB, opts.vcpus, opts.name);
  // SNAPSHOT_RECIPE: bump when what is done between boot and snapshot changes
  const key = new Hasher().add('recipe', SNAPSHOT_RECIPE).add('image', image.hash).add('disk', image.diskSizeMiB).add('req', { ...requirements, template: '' }).hex();
  const dir = path.join(opts.cacheDir, 'templates', `${opts.name}-${key}`);
  const manifest = path.join(dir, 'template.json');
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const release = await acquireDirLock(`${dir}.lock`, 30 * 60_000, () => progress.info('waiting for another build of this template'));
  try {
    await waitForPrune(opts.cacheDir, () => progress.info('waiting for a cache prune to finish'));
    // found in the cache before the lock: a prune may have removed it since
    if (!fs.existsSync(image.rootDisk) || !fs.existsSync(image.kernel)) {
      throw new NsError('template_boot_failed', `image ${image.dir} was removed (a cache prune?) while this build started: run the build again`);
    }
    if (opts.force) fs.rmSync(dir, { recursive: true, force: true });
    if (fs.existsSync(manifest)) {
      progress.info(`template snapshot ${path.basename(dir)} is cached`);
    } else {
      await bootAndSnapshot(opts, dir, key, requirements);
    }
    const version = registerTemplate(opts.cacheDir, opts.name, dir);
    return { ...readJson<TemplateInfo>(manifest), version };
  } finally {
    release();
  }
}

async function bootAndSnapshot(opts: TemplateBuildOptions, dir: string, key: string, requirements: RestoreRequirements): Promise<void> {
  const { image, profile, progress } = opts;
  const staging = `${dir}.tmp`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
  const runDir = path.join(opts.cacheDir, 'run', `tpl-${randomBytes(4).toString('hex')}`);
  let vm: Vm | undefined;
  try {
    const disk = path.join(staging, 'disk.qcow2');
    const memFile = path.join(staging, 'mem');
    await createOverlay(image.rootDisk, disk);
    fs.closeSync(fs.openSync(memFile, 'w', 0o600));
    fs.truncateSync(memFile, opts.memoryMiB * 1024 * 1024);
    const t0 = Date.now();
    const bootedVm = await progress.step(`boot (${profile.accel}, cpu ${profile.cpuModel}, ${opts.memoryMiB} MiB, ${opts.vcpus} vCPU)`, async () => {
      vm = await Vm.launch(
        profile,
        {
          id: `template-${opts.name}`,
          memoryMiB: opts.memoryMiB,
          vcpus: opts.vcpus,
          kernel: image.kernel,
          initrd: image.initrd,
          cmdline: image.cmdline,
          ramFile: memFile,
          disk,
          diskSizeBytes: image.diskSizeMiB * 1024 * 1024,
          runDir,
          consoleLog: true,
          allowInternetAccess: false,
        },
        false,
      );
      const agent = await vm.connectAgent(180_000).catch((err: unknown) => {
        const console = readConsole(runDir);
        throw new NsError('template_boot_failed', `the guest agent did not come up: ${(err as Error).message}${console ? `\nguest console:\n${console}` : ''}`);
      });
      await agent.call('sys.info');
      return vm;
    });
    const bootMs = Date.now() - t0;
    await progress.step('warm up and snapshot', async () => {
      const agent = bootedVm.agent;
      if (!agent) throw new NsError('template_boot_failed', 'agent connection lost during the template build');
      // Bring what most first commands touch into the guest page cache, which the snapshot keeps
      // (sys.warmup: unlike proc.start, nothing of it is recorded for sandboxes to list). What the
      // image has of it: an imported image may have neither python3 nor bash.
      const info = await agent.call('sys.warmup', { cmd: WARMUP, timeoutMs: 120_000 }, 150_000);
      if (info.exitCode !== 0) throw new NsError('template_boot_failed', `warm-up command failed: ${JSON.stringify(info)}`);
      bootedVm.disconnectAgent();
      await new Promise((r) => setTimeout(r, 100));
      await bootedVm.qmp.execute('stop');
      await bootedVm.saveState(path.join(staging, 'state'));
      await bootedVm.quit();
      fsyncFile(memFile);
      fsyncFile(disk);
    });
    const info: TemplateInfo = {
      name: opts.name,
      dir,
      key,
      image,
      memoryMiB: opts.memoryMiB,
      vcpus: opts.vcpus,
      memFile: path.join(dir, 'mem'),
      stateFile: path.join(dir, 'state'),
      disk: path.join(dir, 'disk.qcow2'),
      requirements,
      bootMs,
      builtAt: new Date().toISOString(),
    };
    // the overlay's backing path is absolute and points into the image dir: unaffected by the rename
    writeFileAtomic(path.join(staging, 'template.json'), JSON.stringify(info, null, 2));
    for (const f of fs.readdirSync(staging)) fs.chmodSync(path.join(staging, f), 0o444);
    // sandbox QEMU processes (unprivileged uids) resolve paths in their backing chain at run time
    fs.chmodSync(staging, 0o755);
    fs.renameSync(staging, dir);
  } catch (err) {
    await vm?.kill();
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  } finally {
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

function readConsole(runDir: string): string {
  try {
    return fs.readFileSync(path.join(runDir, 'console.log'), 'utf8').trim().split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}
