import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from './agent/client.js';
import { NsError, wrapError } from './errors.js';
import { isZombie, pidAlive } from './fsutil.js';
import { withRegularFile } from './storage.js';
import type { HostProfile } from './host.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import { captureSnapshot, type CaptureOptions, type CaptureResult, type CaptureTargets } from './snapshot.js';
import { checkRunDir, processVmId, qemuArgs, vmPaths, volumeDeviceArgs, type VolumeDevice, type VmSpec } from './qemu.js';

/**
 * Streams a file into a unix socket; resolves when the connection and the file have closed. The file is closed
 * with the connection, whichever side ends it: QEMU closes an incoming migration once it has read the
 * state's end marker, possibly before the stream has read the file to its end (a pipe alone would
 * then keep the file open for good, and with it the space of a layer deleted later).
 */
export function sendFile(file: string, socketPath: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let src: fs.ReadStream | undefined;
    let failed: Error | undefined;
    const conn = net.createConnection({ path: socketPath });
    conn.once('connect', () => {
      src = fs.createReadStream(file);
      conn.once('close', () => src!.destroy());
      src.once('error', (err) => {
        failed ??= err;
        conn.destroy();
      });
      src.pipe(conn);
    });
    conn.once('error', (err) => (failed ??= err));
    // settled once the connection and the file are both closed: a caller never sees the file's fd still open
    conn.once('close', () => {
      const done = () => (failed ? reject(failed) : resolve());
      if (!src || src.closed) done();
      else src.once('close', done);
    });
  });
}

export interface VmExit {
  /** 'quit': we stopped it. 'died': it went away on its own (killed from outside, crashed, guest powered off). */
  kind: 'quit' | 'died';
  detail: string;
}

/** x-ignore-shared: the RAM is the shared file, only device state travels (the fast path). */
const migrationCaps = (includeRam: boolean) => [{ capability: 'x-ignore-shared', state: !includeRam }];

/**
 * One QEMU process. It is started detached (its own session), so it outlives the server; a restarted
 * server re-attaches with `Vm.adopt`. `exited` resolves once, when the process is gone.
 */
export class Vm extends EventEmitter {
  readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  private quitting = false;
  private isGone = false;
  private _agent: AgentClient | undefined;
  /** The block-stream job under way (streamDisk), if any. */
  private streamJob: string | undefined;

  private constructor(
    readonly profile: HostProfile,
    readonly spec: VmSpec,
    readonly pid: number,
    readonly qmp: QmpClient,
    child: ChildProcess | undefined,
  ) {
    super();
    this.exited = new Promise((r) => (this.resolveExit = r));
    const gone = (detail: string) => {
      if (this.isGone) return;
      this.isGone = true;
      this._agent?.close();
      this.resolveExit({ kind: this.quitting ? 'quit' : 'died', detail });
    };
    if (child) {
      child.once('exit', (code, signal) => gone(signal ? `qemu killed by ${signal}` : `qemu exited with code ${code}`));
    }
    qmp.once('close', () => {
      // QMP closes when QEMU exits. For an adopted process (not our child) poll until it is really gone.
      void (async () => {
        for (let i = 0; i < 200 && pidAlive(this.pid) && !isZombie(this.pid); i++) await sleep(25);
        if (pidAlive(this.pid) && !isZombie(this.pid)) {
          try {
            process.kill(this.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        if (!child) gone(`qemu (pid ${this.pid}) is gone`);
        else setTimeout(() => gone(`qemu (pid ${this.pid}) closed its control socket`), 2000).unref();
      })();
    });
  }

  get gone(): boolean {
    return this.isGone;
  }

  get agent(): AgentClient | undefined {
    return this._agent && !this._agent.isClosed ? this._agent : undefined;
  }

  /** Starts QEMU. With `incoming`, it waits for a migration stream (see `restoreState`). */
  static async launch(profile: HostProfile, spec: VmSpec, incoming: boolean, opts: { nice?: number } = {}): Promise<Vm> {
    checkRunDir(spec.runDir);
    const paths = vmPaths(spec.runDir);
    fs.mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    for (const f of [paths.qmp, paths.agent, paths.pid, paths.migrationIn, paths.migrationOut]) fs.rmSync(f, { force: true });
    const logFd = fs.openSync(paths.log, 'a', 0o600);
    let child: ChildProcess;
    try {
      // umask 007: files QEMU creates in shared volumes must stay writable by the volume group
      // (9p fmode/dmode are subject to it); nothing it creates is for other users
      // `nice`: work done ahead of demand yields the CPU to sandboxes in use (see setNice)
      const nice = opts.nice ? `nice -n ${Math.trunc(opts.nice)} ` : '';
      child = spawn('/bin/sh', ['-c', `umask 007 && exec ${nice}"$0" "$@"`, profile.qemuBinary, ...qemuArgs(profile, spec, incoming)], {
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
    } finally {
      fs.closeSync(logFd);
    }
    child.unref();
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    let exitedEarly = false;
    child.once('exit', () => (exitedEarly = true));
    const pid = child.pid;
    if (pid === undefined) throw new NsError('vm_start_failed', `starting qemu: ${(await spawnError).message}`);
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(paths.qmp, { timeoutMs: 15_000, isAlive: () => !exitedEarly });
    } catch (err) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      throw new NsError('vm_start_failed', `qemu did not start: ${logTail(paths.log) || (err as Error).message}`, { cause: err });
    }
    return new Vm(profile, spec, pid, qmp, child);
  }

  /**
   * Re-attaches to a QEMU process started by an earlier server. Returns undefined when the process is
   * gone or is not this VM's.
   */
  static async adopt(profile: HostProfile, spec: VmSpec, pid: number): Promise<Vm | undefined> {
    if (!pidAlive(pid) || isZombie(pid) || processVmId(pid) !== spec.id) return undefined;
    try {
      const qmp = await QmpClient.connect(vmPaths(spec.runDir).qmp, { timeoutMs: 3000, isAlive: () => pidAlive(pid) });
      return new Vm(profile, spec, pid, qmp, undefined);
    } catch {
      return undefined;
    }
  }

  /** Loads device state (saved with x-ignore-shared: the RAM is the mapped file) and starts the vCPUs. */
  async restoreState(stateFile: string, opts: { start?: boolean; includeRam?: boolean } = {}): Promise<void> {
    const sock = vmPaths(this.spec.runDir).migrationIn;
    try {
      await this.qmp.execute('migrate-set-capabilities', { capabilities: migrationCaps(opts.includeRam === true) });
      await this.qmp.execute('migrate-incoming', { uri: `unix:${sock}` });
      await sendFile(stateFile, sock);
      await this.waitMigration('incoming');
      if (opts.start !== false) await this.qmp.execute('cont');
    } catch (err) {
      throw wrapError(err, `loading device state ${stateFile}: ${logTail(vmPaths(this.spec.runDir).log)}`, 'restore_failed');
    } finally {
      fs.rmSync(sock, { force: true });
    }
  }

  /**
   * Writes the device state to `stateFile` (the VM must be stopped; RAM is not included: it is the
   * RAM file itself, unless `includeRam`: a full migration stream, QEMU's standard save). fsyncs it.
   */
  async saveState(stateFile: string, opts: { includeRam?: boolean } = {}): Promise<void> {
    const sock = vmPaths(this.spec.runDir).migrationOut;
    fs.rmSync(sock, { force: true });
    const out = fs.createWriteStream(stateFile, { mode: 0o600 });
    const outDone = new Promise<void>((resolve, reject) => {
      out.once('close', resolve);
      out.once('error', reject);
    });
    outDone.catch(() => {}); // awaited below on success; a failure is reported through the QMP steps
    // a failed write (a full disk) ends the connection, so that QEMU fails the migration at once
    // instead of blocking with the guest stopped
    const server = net.createServer((conn) => {
      out.once('error', () => conn.destroy());
      conn.pipe(out);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(sock, resolve);
      });
      // QEMU may run under the sandbox's own uid: let it connect (lchown: a link planted in its
      // place is not followed)
      if (this.spec.runAsUid !== undefined) fs.lchownSync(sock, this.spec.runAsUid, this.spec.runAsUid);
      await this.qmp.execute('migrate-set-capabilities', { capabilities: migrationCaps(opts.includeRam === true) });
      await this.qmp.execute('migrate', { uri: `unix:${sock}` });
      await this.waitMigration('outgoing');
      await outDone;
      const fd = fs.openSync(stateFile, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      out.destroy();
      const outErr = await outDone.then(
        () => undefined,
        (e: unknown) => e as NodeJS.ErrnoException,
      );
      if (outErr?.code === 'ENOSPC' || outErr?.code === 'EDQUOT') throw new NsError('no_space', `saving device state: no space left on the data disk`, { cause: outErr });
      throw wrapError(err, 'saving device state', 'snapshot_failed');
    } finally {
      server.close();
      fs.rmSync(sock, { force: true });
    }
  }

  private async waitMigration(direction: string): Promise<void> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const s = await this.qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (s.status === 'completed') return;
      if (s.status === 'failed' || s.status === 'cancelled') {
        throw new NsError('migration_failed', `${direction} migration ${s.status}: ${s['error-desc'] ?? 'no detail'}`);
      }
      if (Date.now() > deadline) throw new NsError('timeout', `${direction} migration did not complete`);
      await sleep(s.status === undefined || s.status === 'none' || s.status === 'setup' ? 1 : 2);
    }
  }

  /** The file and node QEMU actually writes the root disk to (the top of the device's chain). */
  async activeDisk(): Promise<{ file: string; node: string; backingFile: string | undefined }> {
    const blocks = await this.qmp.execute<Array<{ qdev?: string; inserted?: { file: string; 'node-name': string; 'backing_file'?: string } }>>('query-block');
    const root = blocks.find((b) => b.qdev?.includes('/vda/') || b.qdev === 'vda') ?? blocks.find((b) => b.inserted);
    if (!root?.inserted) throw new NsError('qmp_error', 'query-block: the root disk is not attached');
    return { file: root.inserted.file, node: root.inserted['node-name'], backingFile: root.inserted.backing_file };
  }

  /**
   * Copies into the active overlay every cluster of the backing layers above `base` (a file of its
   * chain), so that the overlay then backs directly onto `base`: bounds the chain of a running VM.
   * Runs while the guest runs; resolves when the job completed.
   */
  async streamDisk(base: string): Promise<void> {
    const node = this.spec.diskNode ?? 'root';
    const jobId = `stream-${Date.now().toString(36)}`;
    const done = this.qmp.waitEvent(['BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED'], 600_000, (e) => e.data?.device === jobId);
    done.catch(() => {}); // awaited below; unobserved if the command itself fails
    // (named before the job starts: a cancel right after must find it)
    this.streamJob = jobId;
    try {
      await this.qmp.execute('block-stream', { 'job-id': jobId, device: node, base });
      const ev = await done;
      if (ev.event === 'BLOCK_JOB_CANCELLED') throw new NsError('cancelled', `block-stream ${jobId} was cancelled (the chain stays as it was)`);
      if (ev.data?.error) throw new NsError('disk_failed', `block-stream ${jobId}: ${String(ev.data.error)}`);
    } finally {
      this.streamJob = undefined;
    }
  }

  /** Cancels a `streamDisk` under way (its chain stays valid: what was copied up is the same data). */
  async cancelStream(): Promise<void> {
    if (this.streamJob && !this.gone) await this.qmp.execute('block-job-cancel', { device: this.streamJob, force: true }).catch(() => {});
  }

  /** Hot-plugs a volume's virtio-9p device (its backend exists since the start). */
  async plugVolume(v: VolumeDevice): Promise<void> {
    await this.qmp.execute('device_add', volumeDeviceArgs(v));
    v.onCmdline = true; // from now on part of the VM: snapshots record it and restores start with it
  }

  /** Whether the guest's vCPUs run (false after `stop`, or when a snapshot was interrupted). */
  async isRunning(): Promise<boolean> {
    const s = await this.qmp.execute<{ running: boolean; status: string }>('query-status');
    return s.running;
  }

  /** QEMU's run state ('running', 'paused', 'io-error', ...). */
  async status(): Promise<string> {
    return (await this.qmp.execute<{ status: string }>('query-status')).status;
  }

  /** Starts the vCPUs. */
  async cont(): Promise<void> {
    await this.qmp.execute('cont');
  }

  /** Calls `fn` whenever QEMU stops the VM on a guest write error (werror=enospc: a full host disk). */
  onStoppedOnIoError(fn: () => void): void {
    this.qmp.on('event', (e: QmpEvent) => {
      if (e.event === 'BLOCK_IO_ERROR' && e.data?.action === 'stop') fn();
    });
  }

  /** Memory and disk at one paused instant (runtime/src/snapshot.ts). */
  capture(to: CaptureTargets, opts: CaptureOptions): Promise<CaptureResult> {
    return captureSnapshot(this, to, opts);
  }

  /** Drops the QMP and agent connections and every listener; the VM runs on (a restarted server re-adopts it). */
  detach(): void {
    this.removeAllListeners();
    this.qmp.removeAllListeners('close');
    this.qmp.removeAllListeners('event');
    this.disconnectAgent();
    this.qmp.close();
  }

  /** Connects to the guest agent (handshake retried until `timeoutMs`). */
  async connectAgent(timeoutMs: number): Promise<AgentClient> {
    if (this.agent) return this.agent;
    const agent = await AgentClient.connect(vmPaths(this.spec.runDir).agent, { timeoutMs, isAlive: () => !this.isGone });
    this._agent = agent;
    agent.once('close', () => {
      if (this._agent === agent) this._agent = undefined;
    });
    return agent;
  }

  /** Sets the nice value of every QEMU thread (Linux nice values are per thread). Best effort. */
  setNice(nice: number): void {
    let tids: string[] = [];
    try {
      tids = fs.readdirSync(`/proc/${this.pid}/task`);
    } catch {
      return; // gone
    }
    for (const tid of tids) {
      try {
        os.setPriority(Number(tid), nice);
      } catch {
        /* exited meanwhile */
      }
    }
  }

  /** Drops the agent session (e.g. before a snapshot, so that no stream is captured half-way). */
  disconnectAgent(): void {
    this._agent?.close();
    this._agent = undefined;
  }

  /** Stops QEMU: QMP quit, then SIGKILL if it lingers. Idempotent. */
  async quit(): Promise<VmExit> {
    if (!this.isGone) {
      this.quitting = true;
      this._agent?.close();
      await Promise.race([this.qmp.execute('quit').catch(() => {}), sleep(2000)]);
      const t = setTimeout(() => {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 3000);
      await this.waitExited();
      clearTimeout(t);
    }
    this.qmp.close();
    return this.exited;
  }

  /**
   * `exited`, keeping the event loop alive meanwhile: the child process handle is unref'd (QEMU
   * outlives the server by design), so a caller awaiting only this (a shutdown) would otherwise see
   * Node exit before the exit event arrives, skipping whatever was to follow.
   */
  private async waitExited(): Promise<VmExit> {
    const keepAlive = setInterval(() => {}, 1000);
    try {
      return await this.exited;
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** Kills QEMU at once (SIGKILL). */
  async kill(): Promise<VmExit> {
    if (!this.isGone) {
      this.quitting = true;
      this._agent?.close();
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await this.waitExited();
    }
    this.qmp.close();
    return this.exited;
  }
}

/** The last lines of a QEMU log, for error messages. */
export function logTail(file: string, lines = 5): string {
  try {
    // the log is in a directory the sandbox's uid owns: never follow a link planted there
    return withRegularFile(file, (fd) => fs.readFileSync(fd, 'utf8')).trim().split('\n').slice(-lines).join(' | ');
  } catch {
    return '';
  }
}
