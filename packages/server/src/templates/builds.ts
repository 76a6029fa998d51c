import fs from 'node:fs';
import path from 'node:path';
import {
  acquireDirLock,
  DataDirLayout,
  errorMessage,
  fsyncDir,
  NsError,
  readJson,
  registerTemplate,
  requirementsFor,
  waitForPrune,
  writeFileAtomic,
  type HostProfile,
  type ImageInfo,
  type ImportedImageInfo,
  type TemplateInfo,
  type VmHost,
} from '@nullspace/runtime';
import type { Logger } from '../log.js';
import { newId } from '../util.js';
import { BuildVm, type StepOutput } from './buildvm.js';
import { buildKey, contextFile, contextMatches, finalState, planSteps, type BuildState, type NormalizedSpec, type PlannedStep } from './plan.js';
import { shellJoin } from './dockerfile.js';
import { aptCommand, ARCHIVE_PREFIX, type RegistryAuth, type ResolvedStart } from './spec.js';

/** One line of a build's NDJSON stream (docs/api.md "Templates"). */
export type BuildEvent =
  | { type: 'step'; step: number; of: number; instruction: string; cached: boolean }
  | { type: 'log'; step: number; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'info'; message: string }
  | { type: 'stepDone'; step: number; ms: number }
  | { type: 'done'; template: TemplateInfo }
  | { type: 'error'; code: string; message: string; step?: number | undefined; exitCode?: number | null | undefined; output?: string | undefined };

export interface BuildRequest {
  name: string;
  spec: NormalizedSpec;
  /** The uploaded build context (COPY sources), if any. */
  contextDir?: string | undefined;
  vcpus?: number | undefined;
  memoryMiB?: number | undefined;
  diskSizeMiB?: number | undefined;
  noCache?: boolean | undefined;
}

/** Imports an OCI image (runtime/src/image/oci.ts) as a bootable image, with its run configuration. */
export type ImageImporter = (
  source: { ref: string; auth?: RegistryAuth | undefined } | { archive: string },
  diskSizeMiB: number,
  info: (m: string) => void,
) => Promise<ImportedImageInfo>;

/** What a build starts from. */
interface Base {
  /** "template base:1", "image registry/app:1" */
  describe: string;
  image: ImageInfo;
  /** The disk the first overlay backs onto. */
  disk: string;
  /** A memory snapshot to resume from (a template of the same VM shape); else the VM boots. */
  snapshot?: { memFile: string; stateFile: string } | undefined;
  memoryMiB: number;
  vcpus: number;
  diskSizeMiB: number;
  /** Identity of everything the base contributes (for the step keys). */
  key: string;
  /** What the steps start from: a template's USER, WORKDIR, ENV and exposed ports (as FROM an image does). */
  state: BuildState;
  /** An image's ENTRYPOINT + CMD: the start command when the spec gives none (as `docker run` would run). */
  start?: string | undefined;
}

/** A cached step: its disk layer and the one it backs onto. */
interface CacheEntry {
  layer: string;
  parent: string;
  createdAt: string;
}

/** How long a ready check may take at most (a build's own timeout may be shorter). */
const MAX_READY_MS = 30 * 60_000;

/**
 * Template builds: a build spec run in a VM, step by step, each disk-changing step's result kept as
 * a layer of the build cache (`<cache>/build`: `steps/<key>.json` -> `layers/<lyr>.qcow2`, a chain
 * down to the base's disk), so that an unchanged rebuild reuses everything and a changed step
 * rebuilds from there on. The start command runs last; once its ready check passes, the VM's memory
 * and disk are the template (`<cache>/templates/<name>-<key>`), registered as a new version of the
 * name. The VM is the VM host's (own uid, the sandboxes' firewall), never a sandbox.
 */
export class TemplateBuilds {
  private readonly building = new Set<string>();
  private readonly buildDir: string;

  constructor(
    private readonly deps: {
      cacheDir: string;
      dataDir: string;
      profile: HostProfile;
      /** The template registered as `ref` (`name` or `name:version`), checked against this host. */
      template: (ref: string) => TemplateInfo;
      vms: VmHost;
      /** An admission reservation for a build VM of `memoryMiB` (429/503 when the host is full). */
      admit: (memoryMiB: number) => { release: () => void };
      importImage?: ImageImporter | undefined;
      log: Logger;
    },
  ) {
    this.buildDir = path.join(deps.cacheDir, 'build');
  }

  /** Whether `name` is being built by this server. */
  isBuilding(name: string): boolean {
    return this.building.has(name);
  }

  /**
   * Builds `req` and registers it; `emit` gets the build's events as they happen. Resolves with the
   * template; a failure is thrown (the caller turns it into the stream's error event).
   */
  async build(req: BuildRequest, emit: (e: BuildEvent) => void, signal: AbortSignal): Promise<TemplateInfo> {
    if (this.building.has(req.name)) throw inProgress(req.name);
    this.building.add(req.name);
    let releaseLock: (() => void) | undefined;
    try {
      // (another server of this host building the same name: refused, not queued)
      releaseLock = await acquireDirLock(path.join(this.deps.cacheDir, 'templates', `${req.name}.build.lock`), 0).catch(() => {
        throw inProgress(req.name);
      });
      await waitForPrune(this.deps.cacheDir, () => emit({ type: 'info', message: 'waiting for a cache prune to finish' }));
      return await this.run(req, emit, signal);
    } finally {
      releaseLock?.();
      this.building.delete(req.name);
    }
  }

  private async run(req: BuildRequest, emit: (e: BuildEvent) => void, signal: AbortSignal): Promise<TemplateInfo> {
    const t0 = Date.now();
    const info = (message: string) => emit({ type: 'info', message });
    const base = await this.base(req, info);
    const salt = req.noCache ? newId('nocache') : '';
    const steps = planSteps(req.spec, base.key, req.contextDir, salt, base.state);
    const state = finalState(req.spec, base.state);
    const key = buildKey(steps, base.key, req.spec, state, salt);
    const dir = path.join(this.deps.cacheDir, 'templates', `${req.name}-${key}`);
    if (fs.existsSync(path.join(dir, 'template.json'))) {
      // nothing changed: the template built last time with these inputs is this build
      for (const s of steps) emit({ type: 'step', step: s.n, of: steps.length, instruction: s.instruction, cached: true });
      info('every step and the start command are unchanged: the template is the one built before');
      return this.register(req.name, dir);
    }
    // the longest prefix of disk steps whose layers are cached (and still there)
    let resume = 0;
    let disk = base.disk;
    for (const s of steps) {
      if (!s.disk) continue;
      const entry = this.cached(s.key);
      if (!entry || entry.parent !== disk || !fs.existsSync(entry.layer)) break;
      resume = s.n;
      disk = entry.layer;
    }
    // metadata steps right after the cached prefix are cached too (they change no disk)
    while (resume < steps.length && !steps[resume]!.disk) resume++;
    const bigger = base.diskSizeMiB > base.image.diskSizeMiB;
    const source = resume === 0 && base.snapshot && !bigger ? { restore: { ...base.snapshot, disk } } : { boot: { disk } };
    const vm = await BuildVm.start(this.deps.vms, new DataDirLayout(this.deps.dataDir), base.image, base, source, () => this.deps.admit(base.memoryMiB), info);
    const abort = () => void vm.close();
    signal.addEventListener('abort', abort, { once: true });
    try {
      if ('boot' in source && bigger) await vm.growRootFs(() => {});
      for (const s of steps) {
        if (signal.aborted) throw new NsError('template_build_failed', 'the build was cancelled (its client went away)');
        const cached = s.n <= resume;
        emit({ type: 'step', step: s.n, of: steps.length, instruction: s.instruction, cached });
        if (cached) continue;
        const t = Date.now();
        const out: StepOutput = (stream, data) => emit({ type: 'log', step: s.n, stream, data: data.toString('base64') });
        await this.runStep(vm, s, req.contextDir, out, signal);
        if (s.disk) {
          const layer = path.join(this.buildDir, 'layers', `${newId('lyr')}.qcow2`);
          fs.mkdirSync(path.dirname(layer), { recursive: true, mode: 0o755 });
          await vm.layer(layer, disk, path.join(this.buildDir, 'scratch', newId('lyr')));
          this.remember(s.key, { layer, parent: disk, createdAt: new Date().toISOString() });
          disk = layer;
        }
        emit({ type: 'stepDone', step: s.n, ms: Date.now() - t });
      }
      let start: ResolvedStart | null = req.spec.start ?? (base.start ? { cmd: base.start, ready: null, timeoutMs: 60_000 } : null);
      // a start command with no ready check of its own (a Dockerfile's CMD, an image's) is ready when
      // the first port the template exposes listens: a snapshot of a service not yet up is what no one wants
      if (start && !start.ready && state.exposed.length > 0) {
        start = { ...start, ready: { port: state.exposed[0]! } };
        info(`the start command has no ready check: it is ready when the first exposed port, ${state.exposed[0]}, listens`);
      }
      if (start) await this.startAndWait(vm, start, state, info, signal);
      // what processes of its sandboxes run as and in, when a request names none
      await vm.init({ user: state.user, cwd: state.workdir });
      const staging = `${dir}.tmp`;
      fs.rmSync(staging, { recursive: true, force: true });
      fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
      try {
        info('taking the template snapshot');
        await vm.snapshot(staging, disk);
        await vm.close();
        const template: TemplateInfo = {
          name: req.name,
          dir,
          key,
          image: base.image,
          memoryMiB: base.memoryMiB,
          vcpus: base.vcpus,
          memFile: path.join(dir, 'mem'),
          stateFile: path.join(dir, 'state'),
          disk: path.join(dir, 'disk.qcow2'),
          requirements: requirementsFor(this.deps.profile, base.image, base.memoryMiB, base.vcpus, req.name),
          bootMs: 0,
          builtAt: new Date().toISOString(),
          diskSizeMiB: base.diskSizeMiB,
          defaults: { envs: state.envs, ...(state.user ? { user: state.user } : {}), ...(state.workdir ? { workdir: state.workdir } : {}) },
          build: {
            from: base.describe,
            steps: steps.length,
            start: start ? { cmd: start.cmd, ready: (start.ready as Record<string, unknown> | null) ?? null } : null,
            exposedPorts: state.exposed,
            buildMs: Date.now() - t0,
          },
        };
        writeFileAtomic(path.join(staging, 'template.json'), JSON.stringify(template, null, 2));
        for (const f of fs.readdirSync(staging)) fs.chmodSync(path.join(staging, f), 0o444);
        // sandbox QEMU processes (unprivileged uids) read its files and resolve its chain
        fs.chmodSync(staging, 0o755);
        fs.renameSync(staging, dir);
        fsyncDir(path.dirname(dir));
      } catch (err) {
        fs.rmSync(staging, { recursive: true, force: true });
        throw err;
      }
      return this.register(req.name, dir);
    } finally {
      signal.removeEventListener('abort', abort);
      await vm.close();
    }
  }

  private register(name: string, dir: string): TemplateInfo {
    const version = registerTemplate(this.deps.cacheDir, name, dir);
    return { ...readJson<TemplateInfo>(path.join(dir, 'template.json')), version };
  }

  private async base(req: BuildRequest, info: (m: string) => void): Promise<Base> {
    const from = req.spec.from;
    if ('template' in from) {
      const t = this.deps.template(from.template);
      const memoryMiB = req.memoryMiB ?? t.memoryMiB;
      const vcpus = req.vcpus ?? t.vcpus;
      const baseDisk = t.diskSizeMiB ?? t.image.diskSizeMiB;
      const diskSizeMiB = req.diskSizeMiB ?? baseDisk;
      if (diskSizeMiB < baseDisk) {
        throw new NsError('invalid_build_spec', `a template's disk (${diskSizeMiB} MiB) cannot be smaller than its base's (template ${t.name}: ${baseDisk} MiB)`, {
          details: { field: 'diskSizeMiB', minimum: baseDisk },
        });
      }
      const sameShape = memoryMiB === t.memoryMiB && vcpus === t.vcpus && diskSizeMiB === baseDisk;
      return {
        describe: `template ${t.name}:${t.version ?? 1}`,
        image: t.image,
        disk: t.disk,
        snapshot: sameShape ? { memFile: t.memFile, stateFile: t.stateFile } : undefined,
        memoryMiB,
        vcpus,
        diskSizeMiB,
        key: JSON.stringify(['template', t.dir, memoryMiB, vcpus, diskSizeMiB]),
        state: { user: t.defaults?.user ?? '', workdir: t.defaults?.workdir ?? '', envs: t.defaults?.envs ?? {}, exposed: t.build?.exposedPorts ?? [] },
      };
    }
    if (!this.deps.importImage) throw new NsError('invalid_build_spec', 'this server cannot import OCI images (skopeo and umoci are not installed)');
    const diskSizeMiB = req.diskSizeMiB ?? 4096;
    const source = 'image' in from ? { ref: from.image, auth: from.auth } : { archive: this.archivePath(req, from.archive) };
    const image = await this.deps.importImage(source, diskSizeMiB, info);
    const config = image.oci?.config;
    const envs = Object.fromEntries((config?.env ?? []).filter((e) => e.includes('=')).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    const exposed = (config?.exposedPorts ?? []).map((p) => Number(p.split('/')[0])).filter((p) => Number.isInteger(p) && p > 0);
    const start = [...(config?.entrypoint ?? []), ...(config?.cmd ?? [])];

    return {
      describe: 'image' in from ? `image ${from.image}` : `archive ${from.archive}`,
      image,
      disk: image.rootDisk,
      memoryMiB: req.memoryMiB ?? 512,
      vcpus: req.vcpus ?? 1,
      diskSizeMiB: image.diskSizeMiB,
      key: JSON.stringify(['image', image.hash, image.dir, req.memoryMiB ?? 512, req.vcpus ?? 1]),
      state: { user: config?.user ?? '', workdir: config?.workingDir ?? '', envs, exposed },
      start: start.length ? shellJoin(start) : undefined,
    };
  }

  private archivePath(req: BuildRequest, archive: string): string {
    if (!req.contextDir) throw new NsError('invalid_build_spec', `the image archive ${archive} must be in the build context, and none was uploaded`);
    return contextFile(req.contextDir, archive.slice(ARCHIVE_PREFIX.length), 0);
  }

  private cached(key: string): CacheEntry | undefined {
    const f = path.join(this.buildDir, 'steps', `${key}.json`);
    try {
      return readJson<CacheEntry>(f);
    } catch {
      return undefined;
    }
  }

  private remember(key: string, entry: CacheEntry): void {
    fs.mkdirSync(path.join(this.buildDir, 'steps'), { recursive: true });
    writeFileAtomic(path.join(this.buildDir, 'steps', `${key}.json`), JSON.stringify(entry, null, 2));
  }

  private async runStep(vm: BuildVm, s: PlannedStep, contextDir: string | undefined, out: StepOutput, signal: AbortSignal): Promise<void> {
    const step = s.step;
    switch (step.type) {
      case 'run':
        return this.check(s, await vm.exec(step.cmd, s.state, out, { signal }));
      case 'apt':
        return this.check(s, await vm.exec(aptCommand(step.packages), { ...s.state, user: 'root' }, out, { signal }));
      case 'workdir': {
        const dir = path.posix.resolve(s.state.workdir || '/', step.path);
        await vm.mkdir(dir);
        if (s.state.user) await this.check(s, await vm.exec(`chown "${s.state.user}" '${dir.replace(/'/g, `'\\''`)}'`, { ...s.state, user: 'root', workdir: '/' }, out));
        return;
      }
      case 'copy':
        return this.copy(vm, s, contextDir!, out);
      default:
        return;
    }
  }

  private check(s: PlannedStep, r: { info: { exitCode: number | null; signal: string | null; timedOut: boolean }; tail: string }): void {
    if (r.info.exitCode === 0) return;
    const how = r.info.signal ? `was killed by ${r.info.signal}` : `exited with code ${r.info.exitCode}`;
    throw new NsError('template_build_failed', `step ${s.n} (${s.instruction}) ${how}`, {
      details: { step: s.n, exitCode: r.info.exitCode, output: r.tail },
    });
  }

  /**
   * COPY: a file to `dest` (or into it when it ends with `/`), a directory's contents into `dest`;
   * with glob characters, every match into `dest` (which then ends with `/`). Symbolic links are
   * copied as links (never followed on the host); owned by root unless `chown`.
   */
  private async copy(vm: BuildVm, s: PlannedStep, contextDir: string, out: StepOutput): Promise<void> {
    const step = s.step as Extract<PlannedStep['step'], { type: 'copy' }>;
    const matches = contextMatches(contextDir, step.src, s.n);
    const destBase = path.posix.resolve(s.state.workdir || '/', step.dest);
    const glob = /[*?[]/.test(step.src);
    if (glob && matches.length > 1 && !step.dest.endsWith('/')) {
      throw new NsError('invalid_build_spec', `step ${s.n}: ${step.src} matches ${matches.length} paths: the destination must end with /`, { details: { field: `spec.steps[${s.n - 1}].dest` } });
    }
    const links: Array<[string, string]> = [];
    const modeOf = (m: number) => (step.mode ? parseInt(step.mode, 8) : m & 0o7777);
    const put = async (abs: string, guest: string) => {
      const e = fs.lstatSync(abs);
      if (e.isSymbolicLink()) links.push([fs.readlinkSync(abs), guest]);
      else if (e.isDirectory()) {
        await vm.mkdir(guest, modeOf(e.mode));
        for (const name of fs.readdirSync(abs).sort()) {
          // (what an SDK recipe added to the context is copied only where a step names it)
          if (abs === contextDir && name === '.nullspace') continue;
          await put(path.join(abs, name), path.posix.join(guest, name));
        }
      } else if (e.isFile()) {
        await vm.mkdir(path.posix.dirname(guest));
        await vm.writeFile(abs, guest, modeOf(e.mode));
      }
    };
    const targets: string[] = [];
    for (const src of matches) {
      const st = fs.lstatSync(src);
      if (st.isDirectory() && !(glob && matches.length > 1)) {
        // a directory's contents into dest
        await put(src, destBase);
        targets.push(destBase);
      } else {
        const dest = step.dest.endsWith('/') || (glob && matches.length > 1) ? path.posix.join(destBase, path.basename(src)) : destBase;
        await put(src, dest);
        targets.push(dest);
      }
    }
    const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
    const root: BuildState = { ...s.state, user: 'root', workdir: '/' };
    for (const [target, at] of links) await this.check(s, await vm.exec(`ln -sfn ${q(target)} ${q(at)}`, root, out));
    if (step.chown) for (const t of targets) await this.check(s, await vm.exec(`chown -hR ${q(step.chown)} ${q(t)}`, root, out));
  }

  /** Runs the start command in the background and waits for its ready check. */
  private async startAndWait(vm: BuildVm, start: ResolvedStart, state: BuildState, info: (m: string) => void, signal: AbortSignal): Promise<void> {
    info(`starting: ${start.cmd}`);
    const pid = await vm.startBackground(start.cmd, state);
    if (!start.ready) return;
    const limit = Math.min(start.timeoutMs, MAX_READY_MS);
    info(`waiting until ${describeReady(start.ready)} (at most ${Math.round(limit / 1000)} s)`);
    const deadline = Date.now() + limit;
    for (;;) {
      if (signal.aborted) throw new NsError('template_build_failed', 'the build was cancelled (its client went away)');
      if (await vm.ready(start.ready, state).catch(() => false)) return;
      const p = await vm.process(pid);
      if (p.info && !p.info.running) {
        throw new NsError('template_ready_timeout', `the start command ended (exit code ${p.info.exitCode}${p.info.signal ? `, ${p.info.signal}` : ''}) before ${describeReady(start.ready)}`, {
          details: { exitCode: p.info.exitCode, output: p.output },
        });
      }
      if (Date.now() > deadline) {
        throw new NsError('template_ready_timeout', `${describeReady(start.ready)} did not pass within ${Math.round(limit / 1000)} s of the start command`, {
          details: { output: p.output },
        });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function describeReady(r: ResolvedStart['ready']): string {
  if (!r) return 'nothing';
  if ('port' in r) return `port ${r.port} listens`;
  if ('file' in r) return `${r.file} exists`;
  return `\`${r.cmd}\` succeeds`;
}

function inProgress(name: string): NsError {
  return new NsError('template_build_in_progress', `template ${name} is being built already; wait for that build to end`, { details: { template: name } });
}
