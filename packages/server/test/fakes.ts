/**
 * A fake of what runs VMs (the `VmHost` seam, runtime/src/vmhost.ts): no QEMU, no guest; VMs are
 * objects, the agent answers the lifecycle's calls, captures write small real files (disk layers are
 * real qcow2 headers, so that the capture's backing checks run as in production). Lets unit tests
 * drive the real lifecycle (the SandboxManager and every module behind it, a real SQLite store) in
 * milliseconds, with faults on demand: a VM that dies, a launch that fails after the uid claim.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DataDirLayout,
  DEVICE_SET,
  NsError,
  type AgentOp,
  type AgentStream,
  type CaptureOptions,
  type CaptureResult,
  type CaptureTargets,
  type CleanupStack,
  type GuestAgent,
  type HostProfile,
  type Json,
  type LaunchRequest,
  type OpArgs,
  type OpRequest,
  type OpResult,
  type TemplateInfo,
  type VmExit,
  type VmHandle,
  type VmHost,
  type VmSpec,
  type VolumeDevice,
} from '@nullspace/runtime';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { SandboxManager } from '../src/sandbox/manager.js';
import Database from 'better-sqlite3';
import { openDb, type Db } from '../src/store/db.js';
import { EventLog } from '../src/events/log.js';
import { storeOver } from '../src/store/index.js';
import type { SandboxStore } from '../src/store/sandboxes.js';
import type { SnapshotStore } from '../src/store/snapshots.js';
import { SqliteSql } from '../src/store/sql.js';
import { VolumeService } from '../src/volumes.js';

export const PROFILE: HostProfile = { qemuBinary: 'qemu-fake', qemuVersion: '7.2.0', machine: 'pc-i440fx-7.2', accel: 'tcg', cpuModel: 'max', hostCpu: '' };

/** An agent that answers the lifecycle's ops (with whole results of spec/agent.json) and records them; `fail` makes an op fail. */
export class FakeAgent implements GuestAgent {
  readonly calls: Array<{ op: string; args: Json }> = [];
  readonly fail = new Map<string, Error>();
  private closed = false;
  /** Whether the user processes are frozen (sys.freeze / sys.init thaw:false). */
  frozen = false;

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.closed = true;
  }

  private readonly answers: { [O in AgentOp]?: (args: OpRequest<O>) => OpResult<O> } = {
    'sys.info': () => ({ version: 'fake', protocol: 1, features: ['sys.init.thaw'], bootId: '', timeMs: Date.now(), uptimeMs: 0, hostname: 'fake', initialized: true }),
    'sys.init': (args) => {
      const thaw = args.thaw !== false;
      if (thaw) this.frozen = false;
      return { timeMs: Date.now(), timingsUs: {}, thawed: thaw, frozen: this.frozen };
    },
    'sys.freeze': () => {
      this.frozen = true;
      return { frozen: true, tookUs: 0 };
    },
    'sys.thaw': () => {
      this.frozen = false;
      return { frozen: false, tookUs: 0 };
    },
    'sys.warmup': () => ({ exitCode: 0, tookUs: 0 }),
    'vol.mount': (args) => ({ path: args.path, mounted: true }),
    'vol.unmount': (args) => ({ path: args.path, mounted: false }),
  };

  async call<O extends AgentOp>(op: O, ...[args]: OpArgs<O, [timeoutMs?: number]>): Promise<OpResult<O>> {
    if (this.closed) throw new NsError('agent_unavailable', `${op}: the agent session is closed`);
    const request = args ?? ({} as OpRequest<O>);
    this.calls.push({ op, args: { ...request } });
    const err = this.fail.get(op);
    if (err) throw err;
    const answer = this.answers[op] as ((args: OpRequest<O>) => OpResult<O>) | undefined;
    if (!answer) throw new Error(`the fake agent does not answer ${op}`);
    return answer(request);
  }

  open<O extends AgentOp>(op: O): AgentStream<O> {
    throw new Error(`the fake agent has no streams (${op})`);
  }

  ops(): string[] {
    return this.calls.map((c) => c.op);
  }
}

let nextPid = 900_000;

/** A VM that is an object: it "runs" until killed or `die()`d. */
export class FakeVm implements VmHandle {
  readonly pid = nextPid++;
  readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  private isGone = false;
  private state = 'prelaunch';
  private ioErrorListeners: Array<() => void> = [];
  private agentSession: FakeAgent | undefined;
  /** The agent of the guest (survives reconnections, as the guest's processes do). */
  readonly guest = new FakeAgent();
  /** The file the active overlay backs onto (a template disk or the last captured layer). */
  backing: string;
  /** Faults: the VM dies while stopped in a capture; restoreState fails. */
  dieDuringCapture = false;
  failRestore: Error | undefined;

  constructor(
    readonly spec: VmSpec,
    backing: string,
    private readonly host: FakeVmHost,
  ) {
    this.backing = backing;
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  get gone(): boolean {
    return this.isGone;
  }

  get agent(): GuestAgent | undefined {
    return this.agentSession && !this.agentSession.isClosed ? this.guest : undefined;
  }

  /** As if QEMU died (killed from outside, crashed). */
  die(detail = 'qemu killed by SIGKILL'): void {
    if (this.isGone) return;
    this.isGone = true;
    this.agentSession?.close();
    this.host.gone(this);
    this.resolveExit({ kind: 'died', detail });
  }

  async restoreState(): Promise<void> {
    if (this.failRestore) throw this.failRestore;
    this.state = 'running';
  }

  async plugVolume(d: VolumeDevice): Promise<void> {
    d.onCmdline = true;
  }

  async connectAgent(): Promise<GuestAgent> {
    if (this.isGone) throw new NsError('agent_unavailable', 'the VM is gone');
    this.agentSession = new FakeAgent();
    return this.guest;
  }

  disconnectAgent(): void {
    this.agentSession?.close();
  }

  detach(): void {
    this.disconnectAgent();
  }

  async kill(): Promise<VmExit> {
    if (!this.isGone) {
      this.isGone = true;
      this.agentSession?.close();
      this.host.gone(this);
      this.resolveExit({ kind: 'quit', detail: 'killed' });
    }
    return this.exited;
  }

  async status(): Promise<string> {
    return this.state;
  }

  async isRunning(): Promise<boolean> {
    return this.state === 'running';
  }

  async cont(): Promise<void> {
    this.state = 'running';
  }

  onStoppedOnIoError(fn: () => void): void {
    this.ioErrorListeners.push(fn);
  }

  async activeDisk(): Promise<{ file: string; node: string; backingFile: string | undefined }> {
    return { file: this.spec.disk, node: this.spec.diskNode ?? 'root', backingFile: this.backing };
  }

  async capture(to: CaptureTargets, opts: CaptureOptions): Promise<CaptureResult> {
    this.state = 'paused';
    await opts.onPaused?.();
    if (this.dieDuringCapture) {
      this.die('qemu killed by SIGKILL during a capture');
      throw new NsError('vm_exited', 'saving device state: the VM exited during the snapshot');
    }
    fs.writeFileSync(to.mem, 'ram');
    fs.writeFileSync(to.state, 'state');
    qcow2(to.disk, this.backing);
    await opts.beforeSwitch?.();
    qcow2(to.nextOverlay, to.disk);
    this.spec.disk = to.nextOverlay;
    this.backing = to.disk;
    if (opts.resume) this.state = 'running';
    return { pauseMs: 1, totalMs: 1, phases: {} };
  }

  async streamDisk(): Promise<void> {}
  async cancelStream(): Promise<void> {}
  setNice(): void {}
}

/** Creates a qcow2 image (64 MiB virtual) on `backing`. */
export function qcow2(file: string, backing?: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...(backing ? ['-u', '-F', 'qcow2', '-b', backing] : []), file, '64M']);
}

/** The fake host: VMs by pid (they outlive a manager, as QEMU outlives a server), uid claims. */
export class FakeVmHost implements VmHost {
  readonly profile = PROFILE;
  readonly running = new Map<number, FakeVm>();
  readonly uids = new Map<number, string>();
  private nextUid = 5_000_000;
  /** Fault: the next launch fails once it claimed its uid. */
  failLaunchAfterUid = false;
  readonly launched: FakeVm[] = [];
  /** Called with each new VM before it is handed out (to inject its faults). */
  onLaunch: (vm: FakeVm) => void = () => {};

  constructor(private readonly layout: DataDirLayout) {}

  async launch(req: LaunchRequest, cleanup: CleanupStack): Promise<VmHandle> {
    const files = this.layout.sandboxFiles(req.id);
    fs.mkdirSync(files.dir, { mode: 0o700 });
    cleanup.defer('remove sandbox files', () => fs.rmSync(files.dir, { recursive: true, force: true }));
    const uid = this.nextUid++;
    const owner = this.layout.uidOwner(req.id);
    this.uids.set(uid, owner);
    cleanup.defer('release uid', () => this.release(uid, owner));
    if (this.failLaunchAfterUid) {
      this.failLaunchAfterUid = false;
      throw new NsError('vm_start_failed', 'fault: qemu did not start');
    }
    qcow2(files.disk, req.diskBacking);
    const spec: VmSpec = {
      id: req.id,
      memoryMiB: req.memoryMiB,
      vcpus: req.vcpus,
      kernel: req.kernel,
      initrd: req.initrd,
      cmdline: req.cmdline,
      ramFile: files.ram,
      disk: files.disk,
      diskSizeBytes: req.diskSizeBytes,
      runDir: files.runDir,
      consoleLog: false,
      allowInternetAccess: req.allowInternetAccess,
      runAsUid: uid,
      ...(req.volumes.length ? { volumes: req.volumes.map((v) => ({ ...v, hostPath: v.hostPath ?? this.layout.volumePlaceholder(req.id, v.tag) })) } : {}),
    };
    const vm = new FakeVm(spec, req.diskBacking, this);
    this.running.set(vm.pid, vm);
    this.launched.push(vm);
    cleanup.defer('kill vm', () => vm.kill());
    this.onLaunch(vm);
    return vm;
  }

  async adopt(spec: VmSpec, pid: number): Promise<VmHandle | undefined> {
    const vm = this.running.get(pid);
    return vm && vm.spec.id === spec.id ? vm : undefined;
  }

  processes(): Array<{ pid: number; sandboxId: string }> {
    return [...this.running.values()].map((vm) => ({ pid: vm.pid, sandboxId: vm.spec.id }));
  }

  killProcess(pid: number): void {
    void this.running.get(pid)?.kill();
  }

  removeFiles(id: string): void {
    fs.rmSync(this.layout.sandboxDir(id), { recursive: true, force: true });
  }

  claimUid(id: string, spec: VmSpec): boolean {
    if (spec.runAsUid === undefined) return true;
    const owner = this.uids.get(spec.runAsUid);
    if (owner && owner !== this.layout.uidOwner(id)) return false;
    this.uids.set(spec.runAsUid, this.layout.uidOwner(id));
    return true;
  }

  releaseUid(id: string, spec: VmSpec | null | undefined): void {
    if (spec?.runAsUid !== undefined) this.release(spec.runAsUid, this.layout.uidOwner(id));
  }

  sweepUids(keep: Set<number>): void {
    for (const [uid, owner] of this.uids) if (owner.startsWith(this.layout.uidOwnerPrefix) && !keep.has(uid)) this.uids.delete(uid);
  }

  gone(vm: FakeVm): void {
    this.running.delete(vm.pid);
  }

  private release(uid: number, owner: string): void {
    if (this.uids.get(uid) === owner) this.uids.delete(uid);
  }

  vmOf(sandboxId: string): FakeVm | undefined {
    return [...this.running.values()].find((vm) => vm.spec.id === sandboxId);
  }
}

/** A template of the fake host: small files, a real qcow2 disk where the capture checks expect one. */
export function fakeTemplate(cacheDir: string, name = 'base', key = '0123456789abcdef'): TemplateInfo {
  const dir = path.join(cacheDir, 'templates', `${name}-${key}`);
  fs.mkdirSync(dir, { recursive: true });
  const image = path.join(cacheDir, 'images', `${name}-image`);
  fs.mkdirSync(image, { recursive: true });
  for (const f of ['vmlinux', 'initrd.cpio']) fs.writeFileSync(path.join(image, f), f);
  fs.writeFileSync(path.join(dir, 'mem'), 'template ram');
  fs.writeFileSync(path.join(dir, 'state'), 'template state');
  if (!fs.existsSync(path.join(dir, 'disk.qcow2'))) qcow2(path.join(dir, 'disk.qcow2'));
  return {
    name,
    dir,
    key,
    image: {
      dir: image,
      kernel: path.join(image, 'vmlinux'),
      initrd: path.join(image, 'initrd.cpio'),
      cmdline: 'console=ttyS0',
      diskSizeMiB: 64,
      kernelRelease: '6.1.0-fake',
      agentVersion: 'fake',
    } as TemplateInfo['image'],
    memoryMiB: 512,
    vcpus: 1,
    memFile: path.join(dir, 'mem'),
    stateFile: path.join(dir, 'state'),
    disk: path.join(dir, 'disk.qcow2'),
    requirements: {
      qemuVersion: PROFILE.qemuVersion,
      machine: PROFILE.machine,
      accel: PROFILE.accel,
      cpuModel: PROFILE.cpuModel,
      hostCpu: PROFILE.hostCpu,
      memoryMiB: 512,
      vcpus: 1,
      deviceSet: DEVICE_SET,
      kernelRelease: '6.1.0-fake',
      agentVersion: 'fake',
      template: name,
    },
    bootMs: 1,
    builtAt: new Date().toISOString(),
  };
}

/** A manager on a fake host: its data dir, stores and template; `restart()` is a new server on the same state. */
export class FakeServer {
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), 'nsf-'));
  readonly dataDir = path.join(this.root, 'd');
  readonly cacheDir = path.join(this.root, 'c');
  readonly layout = new DataDirLayout(this.dataDir);
  readonly vms = new FakeVmHost(this.layout);
  template: TemplateInfo;
  config: Config;
  db!: Db;
  store!: SandboxStore;
  snapshots!: SnapshotStore;
  events!: EventLog;
  manager!: SandboxManager;
  layersReleased = 0;

  constructor(env: Record<string, string> = {}) {
    fs.mkdirSync(this.dataDir, { recursive: true });
    this.template = fakeTemplate(this.cacheDir);
    this.config = loadConfig(
      {
        NULLSPACE_API_KEY: 'fake-key-fake-key-fake',
        NULLSPACE_WARM_POOL: '0',
        NULLSPACE_SNAPSHOT_POOL: '0',
        NULLSPACE_NETWORK_ISOLATION: 'off',
        NULLSPACE_CACHE_DIR: this.cacheDir,
        NULLSPACE_MIN_HOST_AVAILABLE_MIB: '0',
        NULLSPACE_MIN_FREE_DISK_MIB: '0',
        NULLSPACE_REAPER_INTERVAL_MS: '50',
        ...env,
      },
      { dataDir: this.dataDir, port: 0 },
    );
  }

  /** Starts (or, after `stop`, restarts) the manager on this state. */
  async start(): Promise<SandboxManager> {
    this.db = await openDb(this.layout.db);
    const store = storeOver(new SqliteSql(this.db));
    this.store = store.sandboxes;
    this.snapshots = store.snapshots;
    const volumes = new VolumeService(this.config, store.volumes, createLogger('silent'));
    volumes.init();
    const host = {
      profile: PROFILE,
      // (the current `template`: a test may rebuild it while the server runs)
      template: (name: string) => {
        if (name !== this.template.name) throw new NsError('template_not_found', `template "${name}" is not built on this host`);
        return this.template;
      },
    };
    this.events = new EventLog(store.events);
    this.manager = new SandboxManager(this.config, this.store, this.snapshots, volumes, host, createLogger('silent'), this.events, this.vms);
    this.manager.onLayersReleased = () => this.layersReleased++;
    await this.manager.start();
    return this.manager;
  }

  /** Stops the manager as a server stop does: VMs keep running. */
  async stop(): Promise<void> {
    await this.manager.close();
    this.db.close();
  }

  /** While stopped: runs `fn` on the database (migrated by `start`). */
  private offline<T>(fn: (db: Db) => T): T {
    const db = new Database(this.layout.db);
    try {
      return fn(db);
    } finally {
      db.close();
    }
  }

  /** While stopped: when sandbox `id`'s latest hibernation was recorded. */
  snapshots_createdAt(id: string): number {
    return this.offline(
      (db) =>
        (db.prepare(`SELECT created_at FROM snapshots WHERE sandbox_id = ? AND kind = 'hibernate' ORDER BY created_at DESC, id DESC LIMIT 1`).get(id) as { created_at: number })
          .created_at,
    );
  }

  /** While stopped: puts sandbox `id` in `state` as an interrupted operation would have (an event row at `at`). */
  setState(id: string, state: string, at: number): void {
    this.offline((db) => {
      const prev = (db.prepare('SELECT state FROM sandboxes WHERE id = ?').get(id) as { state: string }).state;
      db.prepare('UPDATE sandboxes SET state = ? WHERE id = ?').run(state, id);
      db.prepare('INSERT INTO sandbox_events (sandbox_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)').run(id, at, prev, state, 'set by the test');
    });
  }

  /** While stopped: a QEMU of sandbox `id` runs again (its record names it). */
  reviveVm(id: string): void {
    this.offline((db) => {
      const rec = { vmSpec: JSON.parse((db.prepare('SELECT vm_spec FROM sandboxes WHERE id = ?').get(id) as { vm_spec: string }).vm_spec) as VmSpec };
      fs.mkdirSync(this.layout.sandboxDir(id), { recursive: true });
      const vm = new FakeVm(rec.vmSpec!, this.template.disk, this.vms);
      this.vms.running.set(vm.pid, vm);
      if (rec.vmSpec!.runAsUid !== undefined) this.vms.uids.set(rec.vmSpec!.runAsUid, this.layout.uidOwner(id));
      db.prepare('UPDATE sandboxes SET pid = ? WHERE id = ?').run(vm.pid, id);
    });
  }

  /** Ends everything: VMs, files. */
  async destroy(): Promise<void> {
    await this.manager?.close().catch(() => {});
    try {
      this.db?.close();
    } catch {
      /* closed */
    }
    for (const vm of [...this.vms.running.values()]) await vm.kill();
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
