import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  Channel,
  checkQcow2Backing,
  CleanupStack,
  DataDirLayout,
  NsError,
  type GuestAgent,
  type ImageInfo,
  type ProcessInfo,
  type VmHandle,
  type VmHost,
  withRegularFile,
} from '@nullspace/runtime';
import { newId } from '../util.js';
import type { BuildState, ReadyCheck } from './plan.js';

/** Output of a failed step kept for its error (the end of it). */
const OUTPUT_TAIL = 4096;

export interface StepOutput {
  (stream: 'stdout' | 'stderr', data: Buffer): void;
}

/** Where a build VM starts: a template's memory snapshot (restored), or a disk (cold boot). */
export type BuildVmSource =
  | { restore: { memFile: string; stateFile: string; disk: string } }
  | { boot: { disk: string } };

/**
 * The VM a template is built in: a VM of the VM host (its own uid, the sandboxes' firewall, network
 * on), never a sandbox (not listed, not in the store). Steps run through its agent; `layer` freezes
 * its disk into a cache layer; `snapshot` is the template's memory snapshot.
 */
export class BuildVm {
  private readonly cleanup = new CleanupStack();
  private vm!: VmHandle;
  private agent!: GuestAgent;
  readonly id = newId('sbx');

  private constructor(
    private readonly vms: VmHost,
    private readonly layout: DataDirLayout,
    private readonly image: ImageInfo,
    private readonly resources: { memoryMiB: number; vcpus: number; diskSizeMiB: number },
  ) {}

  static async start(
    vms: VmHost,
    layout: DataDirLayout,
    image: ImageInfo,
    resources: { memoryMiB: number; vcpus: number; diskSizeMiB: number },
    source: BuildVmSource,
    reserve: () => { release: () => void },
    info: (message: string) => void,
  ): Promise<BuildVm> {
    const b = new BuildVm(vms, layout, image, resources);
    try {
      const reservation = reserve();
      b.cleanup.defer('release admission', reservation.release);
      const disk = 'restore' in source ? source.restore.disk : source.boot.disk;
      b.vm = await vms.launch(
        {
          id: b.id,
          memFile: 'restore' in source ? source.restore.memFile : null,
          diskBacking: disk,
          memoryMiB: resources.memoryMiB,
          vcpus: resources.vcpus,
          kernel: image.kernel,
          initrd: image.initrd,
          cmdline: image.cmdline,
          diskSizeBytes: resources.diskSizeMiB * 1024 * 1024,
          allowInternetAccess: true,
          volumes: [],
          consoleLog: 'boot' in source,
        },
        b.cleanup,
      );
      if ('restore' in source) {
        await b.vm.restoreState(source.restore.stateFile);
        b.agent = await b.vm.connectAgent(30_000);
      } else {
        info('booting the build VM (no memory snapshot to resume from)');
        b.agent = await b.vm.connectAgent(180_000).catch((err: unknown) => {
          throw new NsError('template_build_failed', `the build VM did not boot: ${(err as Error).message}${consoleTail(b.vm.spec.runDir)}`);
        });
      }
      await b.init({});
      return b;
    } catch (err) {
      await b.close();
      throw err;
    }
  }

  /** sys.init with a throwaway identity (fresh entropy, the host's clock); `defaults` for the template. */
  async init(defaults: { user?: string; cwd?: string }): Promise<void> {
    await this.agent.call('sys.init', {
      timeMs: Date.now(),
      entropy: randomBytes(64).toString('base64'),
      hostname: 'nullspace-build',
      machineId: randomBytes(16).toString('hex'),
      bootId: randomUUID(),
      ...defaults,
    });
  }

  /** Grows the root file system to the disk (a template with a bigger disk than its base). */
  async growRootFs(out: StepOutput): Promise<void> {
    await this.exec('command -v resize2fs >/dev/null 2>&1 && resize2fs "$(findmnt -no SOURCE / 2>/dev/null || echo /dev/vda)" || true', { user: 'root', workdir: '/', envs: {}, exposed: [] }, out);
  }

  /**
   * Runs `cmd` (a shell command) as `state.user` in `state.workdir` with `state.envs`; resolves with
   * how it ended. Its output goes to `out` as it comes.
   */
  async exec(cmd: string, state: BuildState, out: StepOutput, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<{ info: ProcessInfo; tail: string }> {
    let tail = '';
    const stream = this.agent.open(
      'proc.start',
      {
        cmd,
        // (always named: the agent's own defaults are those of a template built earlier)
        cwd: state.workdir || '/',
        ...(Object.keys(state.envs).length ? { envs: state.envs } : {}),
        user: state.user || 'root',
        timeoutMs: opts.timeoutMs ?? 0,
        tag: 'template-build',
      },
      {
        onData: (channel, chunk) => {
          tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
          out(channel === Channel.STDERR ? 'stderr' : 'stdout', chunk);
        },
      },
    );
    const abort = () => stream.cancel('the build was cancelled');
    opts.signal?.addEventListener('abort', abort, { once: true });
    try {
      return { info: await stream.result, tail };
    } finally {
      opts.signal?.removeEventListener('abort', abort);
    }
  }

  /** Starts `cmd` in the background (the template's start command); resolves with its pid. */
  async startBackground(cmd: string, state: BuildState): Promise<number> {
    let pid = 0;
    const stream = this.agent.open(
      'proc.start',
      { cmd, cwd: state.workdir || '/', ...(Object.keys(state.envs).length ? { envs: state.envs } : {}), user: state.user || 'root', tag: 'template-start' },
      {
        onEvent: (e) => {
          if (e.type === 'started') pid = e.pid;
        },
      },
    );
    // the process keeps running when the stream is dropped after its started event
    for (let i = 0; i < 600 && !pid && !stream.done; i++) await new Promise((r) => setTimeout(r, 50));
    if (!pid) {
      const err = await stream.result.then(
        () => undefined,
        (e: unknown) => e,
      );
      throw new NsError('template_build_failed', `the start command did not start: ${err instanceof Error ? err.message : 'no start event'}`);
    }
    stream.cancel('running in the background');
    return pid;
  }

  /** The start command's state and the output it still holds (for errors). */
  async process(pid: number): Promise<{ info: ProcessInfo | undefined; output: string }> {
    const { processes } = await this.agent.call('proc.list', {});
    const info = processes.find((p) => p.pid === pid);
    let output = '';
    const stream = this.agent.open('proc.attach', { pid, replay: true }, { onData: (_c, chunk) => void (output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL)) });
    await Promise.race([stream.result.catch(() => {}), new Promise((r) => setTimeout(r, 300))]);
    if (!stream.done) stream.cancel('read enough');
    return { info, output };
  }

  /** Whether `check` passes now. */
  async ready(check: ReadyCheck, state: BuildState): Promise<boolean> {
    if ('port' in check) return (await Promise.all(['/proc/net/tcp', '/proc/net/tcp6'].map((f) => this.readText(f).catch(() => '')))).some((t) => listening(t, check.port));
    if ('file' in check) return this.agent.call('fs.stat', { path: check.file }).then(() => true, () => false);
    const { info } = await this.exec(check.cmd, state, () => {}, { timeoutMs: 30_000 });
    return info.exitCode === 0;
  }

  private async readText(file: string): Promise<string> {
    const chunks: Buffer[] = [];
    const stream = this.agent.open('fs.read', { path: file }, { onData: (_c, chunk) => void chunks.push(chunk) });
    await stream.result;
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Writes one host file into the guest (streamed, with its mode). */
  async writeFile(hostFile: string, guestPath: string, mode: number): Promise<void> {
    const stream = this.agent.open('fs.write', { path: guestPath, mode });
    const fd = fs.openSync(hostFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(256 * 1024);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        await stream.write(Buffer.from(buf.subarray(0, n)));
      }
    } finally {
      fs.closeSync(fd);
    }
    stream.end();
    await stream.result;
  }

  async mkdir(guestPath: string, mode = 0o755): Promise<void> {
    await this.agent.call('fs.mkdir', { path: guestPath, parents: true, mode });
  }

  /**
   * Freezes the disk into a layer of the build cache at `layerFile` (its parent must be `parent`: the
   * layer is a copy of an overlay the build VM's uid could rewrite); the VM runs on, on a new overlay.
   */
  async layer(layerFile: string, parent: string, scratch: string): Promise<void> {
    await this.exec('sync', { user: 'root', workdir: '/', envs: {}, exposed: [] }, () => {});
    fs.mkdirSync(scratch, { recursive: true, mode: 0o700 });
    try {
      await this.vm.capture(
        { mem: path.join(scratch, 'mem'), state: path.join(scratch, 'state'), disk: layerFile, nextOverlay: this.layout.nextOverlay(this.id) },
        {
          resume: true,
          durable: true,
          virtualSizeBytes: this.resources.diskSizeMiB * 1024 * 1024,
          ownerUid: this.vm.spec.runAsUid,
          beforeSwitch: () => void checkQcow2Backing(layerFile, (b) => b === parent),
        },
      );
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  }

  /**
   * The template's memory snapshot: user processes frozen (the start command resumes in each
   * sandbox after its sys.init), memory, device state and disk into `dir`; the VM stays stopped.
   */
  async snapshot(dir: string, parent: string): Promise<{ pauseMs: number }> {
    await this.agent.call('sys.freeze', {}, 10_000);
    const res = await this.vm.capture(
      { mem: path.join(dir, 'mem'), state: path.join(dir, 'state'), disk: path.join(dir, 'disk.qcow2'), nextOverlay: this.layout.nextOverlay(this.id) },
      {
        resume: false,
        durable: true,
        virtualSizeBytes: this.resources.diskSizeMiB * 1024 * 1024,
        ownerUid: this.vm.spec.runAsUid,
        beforeSwitch: () => void checkQcow2Backing(path.join(dir, 'disk.qcow2'), (b) => b === parent),
      },
    );
    return { pauseMs: res.pauseMs };
  }

  get imageInfo(): ImageInfo {
    return this.image;
  }

  /** Stops the VM and releases everything it held (idempotent). */
  async close(): Promise<void> {
    await this.cleanup.run();
  }
}

/** Whether a /proc/net/tcp{,6} table has a socket listening on `port`. */
export function listening(table: string, port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return table
    .split('\n')
    .slice(1)
    .some((line) => {
      const cols = line.trim().split(/\s+/);
      // local_address is ADDR:PORT (hex); st 0A is LISTEN
      return cols[1]?.endsWith(`:${hex}`) === true && cols[3] === '0A';
    });
}

function consoleTail(runDir: string): string {
  try {
    // (the run dir is the VM's uid's: never follow a link planted there)
    const text = withRegularFile(path.join(runDir, 'console.log'), (fd) => fs.readFileSync(fd, 'utf8')).trim().split('\n').slice(-20).join('\n');
    return text ? `\nguest console:\n${text}` : '';
  } catch {
    return '';
  }
}
