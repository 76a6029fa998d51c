import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  allocatedBytes,
  AgentClient,
  backingChain,
  flattenLayer,
  fsyncDir,
  captureSnapshot,
  checkQcow2Backing,
  chownTree,
  CleanupStack,
  cloneFile,
  compareRequirements,
  createOverlay,
  errorMessage,
  NsError,
  processVmId,
  Vm,
  wrapError,
  type QmpEvent,
  type RequirementMismatch,
  type RestoreRequirements,
  type TemplateInfo,
  type VmSpec,
} from '@nullspace/runtime';
import { Admission, checkFreeDisk } from './admission.js';
import type { Config } from './config.js';
import { notFound } from './errors.js';
import type { HostContext } from './hostctx.js';
import { isTerminal, recoveryTarget, type SandboxState } from './lifecycle.js';
import type { Logger } from './log.js';
import { SandboxStore, type ListQuery, type SandboxRecord } from './store/sandboxes.js';
import { SnapshotStore, type SnapshotKind, type SnapshotQuery, type SnapshotRecord, type VmConfig } from './store/snapshots.js';
import type { VolumeAttachment } from './store/volumes.js';
import { KeyedGate, KeyedMutex, newId, RwLock, SANDBOX_ID_RE } from './util.js';
import type { VolumeService } from './volumes.js';

export interface CreateSandboxRequest {
  /** A template name, or (with `snapshotId`) ignored. */
  template: string;
  snapshotId?: string | undefined;
  /** Set for fork children: the source sandbox. */
  forkedFrom?: string | undefined;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  timeoutMs: number;
  allowInternetAccess: boolean;
  /** What happens when the timeout expires (default kill). */
  onTimeout?: 'kill' | 'hibernate' | undefined;
  /** Shared volumes: guest path -> volume name. From a snapshot: its volumes (this must match or be absent). */
  volumes?: Record<string, string> | undefined;
  /** From a snapshot whose volume was deleted: start with an empty placeholder instead of refusing. */
  allowMissingVolumes?: boolean | undefined;
}

/** What a new sandbox is restored from: a template snapshot or a snapshot of a sandbox. */
interface RestoreSource {
  template: string;
  snapshotId: string | null;
  snapshotKind: SnapshotKind | null;
  memFile: string;
  stateFile: string;
  /** The file the sandbox's first overlay backs onto. */
  diskBacking: string;
  diskParentLayer: string | null;
  vm: VmConfig;
  requirements: RestoreRequirements;
  envs: Record<string, string>;
  volumes: VolumeAttachment[];
  /** The volumes' devices exist in the saved state (snapshots) rather than being plugged after. */
  volumesInState: boolean;
}

export const SNAPSHOT_ID_RE = /^snap_[0-9a-z]{16}$/;

/**
 * Longest chain of frozen disk layers under a sandbox's overlay. Deeper chains are flattened: a
 * restore from a deeper layer first merges it into one layer on the template disk, and a running
 * sandbox whose own chain grew past it streams its layers into its overlay.
 */
export const MAX_CHAIN_DEPTH = 8;
/** Nice value of warm slots until taken: preparing them ahead of demand yields to sandboxes in use. */
const WARM_NICE = 10;
/** The template whose sandboxes the warm pool prepares ahead of demand. */
const WARM_TEMPLATE = 'base';

/** Hibernation snapshots kept per sandbox (the latest is the one it resumes from). */
export const KEEP_HIBERNATIONS = 3;

/** Why a snapshot is not kept warm, for good (see `SandboxManager.warm`). */
class NotWarmable extends Error {
  constructor(why: string) {
    super(`${why}: not kept warm`);
  }
}

/** A sandbox-to-be restored ahead of demand (see `SandboxManager.warm`). */
interface WarmSlot {
  id: string;
  /** What it was restored from: a reusable snapshot, or (null) the `base` template. */
  snapshotId: string | null;
  memFile: string;
  diskBacking: string;
  vm: Vm;
  spec: VmSpec;
  cleanup: CleanupStack;
}

/** A sandbox whose VM this server drives. */
interface Live {
  vm: Vm;
  release: () => void;
  agent?: Promise<AgentClient> | undefined;
  /** A capture froze the user processes and could not thaw them: thawed before the next use. */
  needsThaw?: boolean;
  /** Set while QEMU holds the VM stopped on a full host disk (see `watchDiskFull`). */
  diskFullTimer?: NodeJS.Timeout | undefined;
}

/** How often a VM that QEMU stopped on a full host disk is tried again. */
const DISK_FULL_RETRY_MS = 1000;
/** How long closing the server waits for lifecycle operations under way. */
const CLOSE_WAIT_MS = 15_000;
/** How long a capture waits for process starts (and file work, with volumes) already under way. */
const CAPTURE_DRAIN_MS = 10_000;

/**
 * Owns every sandbox's VM: creates them from template snapshots, serializes lifecycle operations
 * per sandbox, watches for VMs that die, enforces timeouts, and re-adopts running VMs after a
 * server restart.
 */
export class SandboxManager {
  private readonly live = new Map<string, Live>();
  private readonly locks = new KeyedMutex();
  /** Closed while a sandbox is captured (see agentFor). */
  private readonly gate = new KeyedGate();
  private readonly admission: Admission;
  private reaper: NodeJS.Timeout | undefined;
  private closing = false;
  /** close() is done: nothing is attached any more. */
  private closed = false;
  /** Snapshot captures and restores read the layer store; the garbage collector writes it. */
  readonly layersLock = new RwLock();
  /** Called when layers may have lost their last reference (a sandbox ended, a snapshot was deleted). */
  onLayersReleased: () => void = () => {};

  constructor(
    private readonly config: Config,
    private readonly store: SandboxStore,
    private readonly snapshots: SnapshotStore,
    private readonly volumes: VolumeService,
    private readonly host: HostContext,
    private readonly log: Logger,
  ) {
    this.admission = new Admission(config.limits);
  }

  get layersDir(): string {
    return path.join(this.config.dataDir, 'layers');
  }

  /** Test-only fault injection: the server process dies here, as with kill -9. */
  private crashPoint(name: string): void {
    if (this.config.faultInjection === name) {
      this.log.warn({ fault: name }, 'fault injection: killing the server process');
      process.kill(process.pid, 'SIGKILL');
    }
  }

  /**
   * Test-only fault injection ("<name>-waits"): stops here until the test releases it. Writes
   * `<dataDir>/fault-<name>.waiting`, then waits for `<dataDir>/fault-<name>.go` (which stays: later
   * arrivals go straight on).
   */
  private async faultWait(name: string): Promise<void> {
    if (this.config.faultInjection !== `${name}-waits`) return;
    const go = path.join(this.config.dataDir, `fault-${name}.go`);
    if (fs.existsSync(go)) return;
    this.log.warn({ fault: name }, 'fault injection: waiting for the test');
    fs.writeFileSync(path.join(this.config.dataDir, `fault-${name}.waiting`), '');
    while (!fs.existsSync(go) && !this.closing) await new Promise((r) => setTimeout(r, 50));
  }

  /** Names this server's claim on a sandbox uid (host-wide registry). */
  private uidOwner(id: string): string {
    return `${this.config.dataDir} ${id}`;
  }

  private releaseUid(id: string, spec: VmSpec | null | undefined): void {
    if (spec?.runAsUid !== undefined) this.host.uids?.release(spec.runAsUid, this.uidOwner(id));
  }

  sandboxDir(id: string): string {
    if (!SANDBOX_ID_RE.test(id)) throw new NsError('internal', `refusing a host path for malformed sandbox id ${JSON.stringify(id)}`);
    return path.join(this.config.dataDir, 'sandboxes', id);
  }

  get usage(): { sandboxes: number; memoryMiB: number } {
    return this.admission.usage;
  }

  /** Recovers state after a (re)start and starts the timeout reaper. */
  async start(): Promise<void> {
    // VMs run as their own uids: they may traverse (not list) the data dir to reach their own directory
    fs.mkdirSync(path.join(this.config.dataDir, 'sandboxes'), { recursive: true });
    fs.chmodSync(this.config.dataDir, 0o711);
    fs.chmodSync(path.join(this.config.dataDir, 'sandboxes'), 0o711);
    // layers are read only by the server (root): QEMU gets them opened, or reflinked into its directory
    fs.mkdirSync(path.join(this.layersDir, '.staging'), { recursive: true, mode: 0o700 });
    fs.rmSync(path.join(this.layersDir, '.staging'), { recursive: true, force: true });
    fs.mkdirSync(path.join(this.layersDir, '.staging'), { mode: 0o700 });
    const adopted = new Set<number>();
    const adoptedUids = new Set<number>();
    for (const rec of this.store.inStates(['creating', 'running', 'hibernating', 'resuming', 'killing'])) {
      const vm = rec.vmSpec && rec.pid ? await Vm.adopt(this.host.profile, rec.vmSpec, rec.pid) : undefined;
      // a hibernation of *this* attempt: newer than the sandbox's move into `hibernating` (older ones
      // are kept after resumes and must not count)
      const since = rec.state === 'hibernating' ? this.store.lastTransitionAt(rec.id, 'hibernating') : undefined;
      const recorded = since !== undefined && this.snapshots.hibernations(rec.id).some((h) => h.createdAt >= since);
      const target = recoveryTarget(rec.state, vm !== undefined, recorded);
      if (target === 'adopt' && vm) {
        if (rec.state === 'hibernating') {
          // interrupted before its hibernation was recorded: it runs on (reconcile resumes the vCPUs)
          this.store.transition(rec.id, 'hibernating', 'running', 'hibernation interrupted by a server restart; still running');
          rec.state = 'running';
        }
        adopted.add(vm.pid);
        if (rec.vmSpec?.runAsUid !== undefined) {
          adoptedUids.add(rec.vmSpec.runAsUid);
          this.host.uids?.claim(rec.vmSpec.runAsUid, this.uidOwner(rec.id));
        }
        // already running: counted, never refused (a full host must not stop the server from starting)
        const reservation = this.admission.reserve(rec.memoryMiB, { force: true });
        await this.reconcile(rec, vm);
        this.attach(rec.id, vm, reservation.release, { adopted: true });
        this.log.info({ sandboxId: rec.id, pid: vm.pid }, 're-adopted running sandbox');
        // reconnect now: sys.init also thaws user processes an interrupted snapshot left frozen
        void this.agent(rec.id).catch((err: unknown) => this.log.warn({ sandboxId: rec.id, err: errorMessage(err) }, 'agent of a re-adopted sandbox unavailable'));
        continue;
      }
      await vm?.kill();
      this.removeFiles(rec.id);
      this.releaseUid(rec.id, rec.vmSpec);
      if (target === 'paused') {
        // a hibernation that was recorded (its VM may not have stopped yet), or an interrupted resume
        this.store.transition(rec.id, rec.state, 'paused', `${rec.state} interrupted by a server restart; paused`, {
          pid: null,
          expiresAt: null,
          diskParentLayer: null,
          remainingMs: rec.remainingMs ?? Math.max(1000, (rec.expiresAt ?? Date.now()) - Date.now()),
          pausedAt: rec.pausedAt ?? Date.now(),
        });
        this.log.warn({ sandboxId: rec.id, from: rec.state, to: target }, 'recovered sandbox after restart');
        continue;
      }
      const reason = rec.state === 'killing' ? 'killed (finished after a server restart)' : `its VM was gone after a server restart (was ${rec.state})`;
      this.store.transition(rec.id, rec.state, target as SandboxState, reason, {
        endedAt: Date.now(),
        endReason: reason,
        errorCode: target === 'failed' ? 'vm_exited' : null,
        pid: null,
        diskParentLayer: null,
      });
      if (target === 'failed' || target === 'killed') this.dropHibernations(rec.id);
      this.log.warn({ sandboxId: rec.id, from: rec.state, to: target }, 'recovered sandbox after restart');
    }
    // internal fork captures live only while their child starts: any found now were interrupted
    for (const s of this.snapshots.all()) if (s.kind === 'fork') this.snapshots.delete(s.id);
    this.killOrphans(adopted);
    this.host.uids?.sweep(`${this.config.dataDir} `, adoptedUids);
    this.reaper = setInterval(() => void this.reap(), this.config.reaperIntervalMs);
    this.reaper.unref();
    this.refillWarm();
  }

  /**
   * Makes a re-adopted sandbox's record agree with its QEMU: a server that died in the middle of a
   * snapshot may have left the VM stopped, or switched to its next overlay without recording it.
   */
  private async reconcile(rec: SandboxRecord, vm: Vm): Promise<void> {
    try {
      const active = await vm.activeDisk();
      // (what QEMU reports is only taken for one of this sandbox's own overlays: its uid may lie)
      if (rec.vmSpec && active.file !== rec.vmSpec.disk) {
        const own = path.dirname(active.file) === this.sandboxDir(rec.id) && /^disk-[0-9a-z]+\.qcow2$/.test(path.basename(active.file));
        if (!own) {
          this.log.error({ sandboxId: rec.id, disk: active.file }, 'QEMU reports a disk that is not one of the sandbox\'s overlays: not recorded');
        } else {
          const parent = active.backingFile ? this.snapshots.layerByPath(active.backingFile) : undefined;
          vm.spec.disk = active.file;
          vm.spec.diskNode = active.node;
          this.store.patch(rec.id, { vmSpec: vm.spec, ...(parent ? { diskParentLayer: parent.id } : {}) });
          this.log.warn({ sandboxId: rec.id, disk: active.file }, 'recorded the overlay an interrupted snapshot had switched to');
        }
      }
      if (rec.state === 'running' && !(await vm.isRunning())) {
        await vm.qmp.execute('cont');
        this.log.warn({ sandboxId: rec.id }, 'resumed a VM left paused by an interrupted snapshot');
      }
    } catch (err) {
      this.log.error({ sandboxId: rec.id, err: errorMessage(err) }, 'reconciling a re-adopted sandbox failed');
    }
  }

  /** QEMU processes of this data dir that no record owns (e.g. a crash between spawn and record). */
  private killOrphans(adopted: Set<number>): void {
    const sandboxesDir = path.join(this.config.dataDir, 'sandboxes') + '/';
    for (const pidStr of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      const pid = Number(pidStr);
      if (adopted.has(pid)) continue;
      const id = processVmId(pid);
      if (!id || !SANDBOX_ID_RE.test(id)) continue;
      let cmdline = '';
      try {
        cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      // exactly this data dir's sandbox of that id (not a data dir whose path merely contains ours)
      if (!cmdline.split('\0').some((a) => a.includes(`mem-path=${sandboxesDir}${id}/mem,`))) continue;
      const rec = this.store.get(id);
      if (rec && this.live.has(id)) continue;
      this.log.warn({ sandboxId: id, pid }, 'killing an orphaned QEMU process of this data dir');
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      if (!rec || isTerminal(rec.state)) this.removeFiles(id);
    }
  }

  /** Stops background work and drops connections; VMs keep running (a restarted server re-adopts them). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.reaper) clearInterval(this.reaper);
    // warm VMs are not sandboxes: they go with the server
    await Promise.all(this.warm.splice(0).map((slot) => slot.cleanup.run()));
    // ones still being prepared clean up when they finish (their steps have timeouts): wait for them,
    // so that nothing of theirs (a QEMU, a uid claim) outlives the server
    await Promise.allSettled([...this.warming.keys()]);
    // lifecycle operations under way (a create, a resume, the reaper's hibernation) finish first, so
    // that their records are not left half-way for the next start to repair; a long one (a disk
    // chain streamed in the background) is not waited for beyond CLOSE_WAIT_MS
    await this.locks.idle(CLOSE_WAIT_MS);
    for (const l of this.live.values()) {
      clearInterval(l.diskFullTimer);
      l.vm.removeAllListeners();
      l.vm.qmp.removeAllListeners('close');
      l.vm.disconnectAgent();
      l.vm.qmp.close();
    }
    this.live.clear();
    this.closed = true;
  }

  get(id: string): SandboxRecord {
    const rec = SANDBOX_ID_RE.test(id) ? this.store.get(id) : undefined;
    if (!rec) throw notFound('sandbox', id);
    return rec;
  }

  list(q: ListQuery): { items: SandboxRecord[]; nextToken: string | undefined } {
    return this.store.list(q);
  }

  /** Where a new sandbox comes from: the template's snapshot, or a snapshot (checked against this host). */
  private templateSource(t: TemplateInfo, volumes: Record<string, string>): RestoreSource {
    return {
      template: t.name,
      snapshotId: null,
      snapshotKind: null,
      memFile: t.memFile,
      stateFile: t.stateFile,
      diskBacking: t.disk,
      diskParentLayer: null,
      vm: {
        kernel: t.image.kernel,
        initrd: t.image.initrd,
        cmdline: t.image.cmdline,
        memoryMiB: t.memoryMiB,
        vcpus: t.vcpus,
        diskSizeBytes: t.image.diskSizeMiB * 1024 * 1024,
        allowInternetAccess: true,
      },
      requirements: t.requirements,
      envs: {},
      volumes: this.volumes.attachments(volumes),
      volumesInState: false,
    };
  }

  private async restoreSource(req: Pick<CreateSandboxRequest, 'template' | 'snapshotId' | 'volumes'>): Promise<RestoreSource> {
    if (req.snapshotId === undefined) return this.templateSource(this.host.template(req.template), req.volumes ?? {});
    const snap = this.getSnapshot(req.snapshotId);
    const compat = this.compatibility(snap);
    if (!compat.compatible) {
      throw new NsError(
        'snapshot_incompatible',
        `snapshot ${snap.id} cannot be restored on this host: ${compat.mismatches.map((m) => `${m.field} is ${m.snapshot} in the snapshot but ${m.host} here`).join('; ')}`,
        { details: { snapshotId: snap.id, mismatches: compat.mismatches } },
      );
    }
    if (snap.kind === 'hibernate') {
      throw new NsError('bad_request', `snapshot ${snap.id} is a hibernation snapshot: resume its sandbox (Sandbox.resume / connect) instead`, {
        details: { snapshotId: snap.id, kind: snap.kind },
      });
    }
    await this.boundSnapshotChain(snap);
    if (req.volumes !== undefined && !sameVolumes(req.volumes, snap.volumes)) {
      throw new NsError('bad_request', `a sandbox started from snapshot ${snap.id} mounts the snapshot's volumes (${describeVolumes(snap.volumes)}); leave volumes out`, {
        details: { field: 'volumes' },
      });
    }
    return this.snapshotSource(snap);
  }

  /** A snapshot's layers as what a sandbox is restored from (the caller holds the layer lock). */
  private snapshotSource(snap: SnapshotRecord): RestoreSource {
    const layer = (id: string) => {
      const l = this.snapshots.layer(id);
      if (!l || !fs.existsSync(l.path)) throw new NsError('internal', `snapshot ${snap.id}: layer ${id} is missing`);
      return l;
    };
    return {
      template: snap.template,
      snapshotId: snap.id,
      snapshotKind: snap.kind,
      memFile: layer(snap.memLayer).path,
      stateFile: layer(snap.stateLayer).path,
      diskBacking: layer(snap.diskLayer).path,
      diskParentLayer: snap.diskLayer,
      vm: snap.vmConfig,
      requirements: snap.requirements,
      envs: snap.envs,
      volumes: snap.volumes,
      volumesInState: true,
    };
  }

  /**
   * Flattens a snapshot's disk chain once it is deeper than MAX_CHAIN_DEPTH (snapshots of restored
   * sandboxes, hibernate/resume cycles each add a layer), so that every restore stays bounded. The
   * caller holds the layer lock.
   */
  private async boundSnapshotChain(snap: SnapshotRecord): Promise<void> {
    if (this.snapshots.depth(snap.diskLayer) <= MAX_CHAIN_DEPTH) return;
    const flat = await this.flatten(snap.diskLayer);
    this.snapshots.setDiskLayer(snap.id, flat);
    snap.diskLayer = flat;
    this.onLayersReleased();
  }

  async create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    if (this.closing) throw new NsError('shutting_down', 'the server is shutting down');
    // the garbage collector waits while the source's layers are resolved and cloned (not longer:
    // the agent connection and sys.init that follow may take a while)
    const releaseLayers = await this.layersLock.acquireRead();
    try {
      const src = await this.restoreSource(req);
      checkFreeDisk(this.config.dataDir, this.config.limits.minFreeDiskMiB, 'creating a sandbox');
      const reservation = this.admission.reserve(src.vm.memoryMiB);
      const slot = this.takeWarm(src, req.allowInternetAccess);
      const id = slot?.id ?? newId('sbx');
      const now = Date.now();
      const envs = { ...src.envs, ...req.envs };
      this.store.insert({
        id,
        state: 'creating',
        template: src.template,
        snapshotId: src.snapshotId,
        metadata: req.metadata,
        envs,
        memoryMiB: src.vm.memoryMiB,
        vcpus: src.vm.vcpus,
        allowInternetAccess: req.allowInternetAccess,
        timeoutMs: req.timeoutMs,
        createdAt: now,
        startedAt: null,
        expiresAt: null,
        endedAt: null,
        endReason: null,
        errorCode: null,
        pid: null,
        identity: { machineId: randomBytes(16).toString('hex'), bootId: randomUUID() },
        vmSpec: null,
        requirements: src.requirements,
        diskParentLayer: src.diskParentLayer,
        forkedFrom: req.forkedFrom ?? null,
        onTimeout: req.onTimeout ?? 'kill',
        remainingMs: null,
        pausedAt: null,
        volumes: src.volumes,
        updatedAt: now,
      });
      return this.locks.run(id, async () => {
        const t0 = Date.now();
        const cleanup = new CleanupStack();
        cleanup.defer('release admission', reservation.release);
        const phases: Record<string, number> = {};
        try {
          let restored: Awaited<ReturnType<SandboxManager['restore']>>;
          try {
            if (slot) {
              cleanup.defer('warm slot', () => slot.cleanup.run());
              phases.warm = 1;
              slot.vm.setNice(0); // prepared at a low priority; a sandbox now
              this.store.patch(id, { pid: slot.vm.pid, vmSpec: slot.spec });
              restored = { vm: slot.vm };
            } else {
              restored = await this.restore(id, src, req.allowInternetAccess, cleanup, phases, req.allowMissingVolumes === true);
            }
          } finally {
            releaseLayers();
          }
          const { vm } = restored;
          const rec = this.store.get(id)!;
          let t = Date.now();
          const agent = await vm.connectAgent(15_000);
          phases.agentMs = Date.now() - t;
          t = Date.now();
          await this.mountVolumes(rec, agent);
          phases.volumesMs = Date.now() - t;
          t = Date.now();
          await this.initAgent(rec, agent);
          phases.initMs = Date.now() - t;
          const started = Date.now();
          const running = this.store.transition(id, 'creating', 'running', 'started', { startedAt: started, expiresAt: started + req.timeoutMs });
          cleanup.release();
          this.attach(id, vm, reservation.release);
          this.log.info({ sandboxId: id, template: src.template, snapshotId: src.snapshotId, ms: Date.now() - t0, ...phases }, 'sandbox created');
          return running;
        } catch (err) {
          const errors = await cleanup.run();
          for (const e of errors) this.log.error({ sandboxId: id, err: e.message }, 'cleanup after a failed create');
          const wrapped = wrapError(err, `creating sandbox ${id}`, 'vm_start_failed');
          this.store.transition(id, 'creating', 'failed', wrapped.message, {
            endedAt: Date.now(),
            endReason: wrapped.message,
            errorCode: wrapped.code,
            pid: null,
            diskParentLayer: null,
          });
          this.log.error({ sandboxId: id, err: wrapped.message }, 'sandbox create failed');
          throw wrapped;
        }
      });
    } finally {
      releaseLayers();
    }
  }

  /** Prepares the sandbox's RAM file and disk from `src` and restores its device state. */
  private async restore(
    id: string,
    src: RestoreSource,
    allowInternetAccess: boolean,
    cleanup: CleanupStack,
    phases: Record<string, number>,
    allowMissingVolumes = false,
  ): Promise<{ vm: Vm }> {
    const t0 = Date.now();
    const { vm, spec } = await this.prepareVm(id, src, allowInternetAccess, cleanup, allowMissingVolumes, phases);
    phases.launchMs = Date.now() - t0 - (phases.prepareMs ?? 0);
    await this.finishRestore(id, vm, spec, src, phases);
    return { vm };
  }

  /** The sandbox's directory, RAM file, overlay and uid, and its QEMU started waiting for a migration. */
  private async prepareVm(
    id: string,
    src: RestoreSource,
    allowInternetAccess: boolean,
    cleanup: CleanupStack,
    allowMissingVolumes: boolean,
    phases: Record<string, number> = {},
    warm = false,
  ): Promise<{ vm: Vm; spec: VmSpec }> {
    const t0 = Date.now();
    const dir = this.sandboxDir(id);
    fs.mkdirSync(dir, { mode: 0o700 });
    cleanup.defer('remove sandbox files', () => fs.rmSync(dir, { recursive: true, force: true }));
    const spec: VmSpec = {
      id,
      memoryMiB: src.vm.memoryMiB,
      vcpus: src.vm.vcpus,
      kernel: src.vm.kernel,
      initrd: src.vm.initrd,
      cmdline: src.vm.cmdline,
      ramFile: path.join(dir, 'mem'),
      disk: path.join(dir, 'disk-0.qcow2'),
      diskSizeBytes: src.vm.diskSizeBytes,
      runDir: path.join(dir, 'run'),
      consoleLog: false,
      allowInternetAccess,
    };
    const { devices } = this.volumes.devices(src.volumes, src.volumesInState, { allowMissing: allowMissingVolumes, placeholderDir: dir });
    if (devices.length) spec.volumes = devices;
    await Promise.all([cloneFile(src.memFile, spec.ramFile), createOverlay(src.diskBacking, spec.disk)]);
    if (this.host.uids) {
      const uid = this.host.uids.allocate(this.uidOwner(id));
      cleanup.defer('release uid', () => this.host.uids?.release(uid, this.uidOwner(id)));
      spec.runAsUid = uid;
      // the shared-volumes group reaches the volume directories (2770 root:group)
      if (devices.length) spec.runAsGid = this.config.volumeGid;
      fs.mkdirSync(spec.runDir, { mode: 0o700 });
      chownTree(dir, uid);
    }
    phases.prepareMs = Date.now() - t0;
    const vm = await Vm.launch(this.host.profile, spec, true, { nice: warm ? WARM_NICE : 0 });
    cleanup.defer('kill vm', () => vm.kill());
    return { vm, spec };
  }

  /** Loads the saved state into a prepared VM and runs it; plugs volumes a template's state lacks. */
  private async finishRestore(id: string, vm: Vm, spec: VmSpec, src: RestoreSource, phases: Record<string, number>): Promise<void> {
    this.store.patch(id, { pid: vm.pid, vmSpec: spec });
    let t = Date.now();
    await vm.restoreState(src.stateFile);
    phases.restoreMs = Date.now() - t;
    t = Date.now();
    // a template has no volume devices in its saved state: they are hot-plugged now
    for (const d of spec.volumes ?? []) if (!d.onCmdline) await vm.plugVolume(d);
    if (spec.volumes?.length) {
      this.store.patch(id, { vmSpec: spec });
      phases.plugMs = Date.now() - t;
    }
  }

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
  private readonly warm: WarmSlot[] = [];
  /** Slots being prepared, by what they are of (a snapshot id; null: the `base` template). */
  private readonly warming = new Map<Promise<void>, string | null>();
  /** Reusable snapshots kept warm, most recently created or used first. */
  private readonly hotSnapshots: string[] = [];
  /** Snapshots found unfit to be kept warm (their agent cannot keep user processes frozen, ...). */
  private readonly unwarmable = new Set<string>();

  get warmPool(): { size: number; ready: number; preparing: number } {
    return { size: this.config.warmPoolSize, ...this.slotCounts((key) => key === null) };
  }

  get snapshotPool(): { size: number; ready: number; preparing: number; snapshots: string[] } {
    return { size: this.config.snapshotPoolSize, ...this.slotCounts((key) => key !== null), snapshots: [...this.hotSnapshots] };
  }

  /** Slots ready and being prepared, of the keys (snapshot ids; null: the template) that `of` accepts. */
  private slotCounts(of: (key: string | null) => boolean): { ready: number; preparing: number } {
    return { ready: this.warm.filter((s) => of(s.snapshotId)).length, preparing: [...this.warming.values()].filter(of).length };
  }

  /** Slots of `key`, ready or being prepared. */
  private slotsOf(key: string | null): number {
    const { ready, preparing } = this.slotCounts((k) => k === key);
    return ready + preparing;
  }

  private refillWarm(): void {
    if (this.closing) return;
    if (this.config.warmPoolSize > 0) {
      let template: TemplateInfo | undefined;
      try {
        template = this.host.template(WARM_TEMPLATE);
      } catch {
        // no usable base template on this host
      }
      while (template && this.slotsOf(null) < this.config.warmPoolSize) {
        const src = this.templateSource(template, {});
        this.startWarm(null, (id, cleanup) => this.prepareWarm(id, src, cleanup));
      }
    }
    for (const snapId of this.hotSnapshots) {
      if (this.slotsOf(snapId) === 0) this.startWarm(snapId, (id, cleanup) => this.prepareSnapshotWarm(id, snapId, cleanup));
    }
  }

  private startWarm(key: string | null, prepare: (id: string, cleanup: CleanupStack) => Promise<WarmSlot>): void {
    const id = newId('sbx');
    const cleanup = new CleanupStack();
    const preparing: Promise<void> = prepare(id, cleanup)
      .then(
        async (slot) => {
          // a snapshot that was deleted or fell out of the pool meanwhile has no use for it
          if (this.closing || (key !== null && !this.hotSnapshots.includes(key))) await cleanup.run();
          else this.warm.push(slot);
        },
        async (err: unknown) => {
          await cleanup.run();
          if (key !== null) {
            this.unhot(key);
            // not tried again on every create from it (another failure is tried again on the next)
            if (err instanceof NotWarmable) this.unwarmable.add(key);
          }
          this.log.warn({ snapshotId: key ?? undefined, err: errorMessage(err) }, 'preparing a warm VM failed');
        },
      )
      .finally(() => this.warming.delete(preparing));
    this.warming.set(preparing, key);
  }

  private async prepareWarm(id: string, src: RestoreSource, cleanup: CleanupStack): Promise<WarmSlot> {
    const { vm, spec } = await this.prepareVm(id, src, true, cleanup, false, {}, true);
    await vm.restoreState(src.stateFile);
    const agent = await vm.connectAgent(15_000);
    await sysInit(agent, { hostname: id, machineId: randomBytes(16).toString('hex'), bootId: randomUUID(), envs: {} });
    // the guest's first process start runs cold: paid here, not by the user's first command
    await agent.call('sys.warmup', { cmd: 'true', timeoutMs: 20_000 }, 30_000);
    return { id, snapshotId: null, memFile: src.memFile, diskBacking: src.diskBacking, vm, spec, cleanup };
  }

  /** A slot of a reusable snapshot: restored, agent connected, identity set, user processes still frozen. */
  private async prepareSnapshotWarm(id: string, snapId: string, cleanup: CleanupStack): Promise<WarmSlot> {
    let src: RestoreSource;
    let vm: Vm;
    let spec: VmSpec;
    // the collector waits while the layers are cloned and opened (as for a create)
    const releaseLayers = await this.layersLock.acquireRead();
    try {
      src = await this.restoreSource({ template: '', snapshotId: snapId });
      if (src.volumes.length) throw new NotWarmable(`snapshot ${snapId} mounts volumes`);
      ({ vm, spec } = await this.prepareVm(id, src, true, cleanup, false, {}, true));
      await vm.restoreState(src.stateFile);
    } finally {
      releaseLayers();
    }
    const agent = await vm.connectAgent(15_000);
    // an agent that predates `thaw: false` would ignore it and run the user's processes now
    const info = await agent.call<{ features?: string[] }>('sys.info');
    if (!info.features?.includes('sys.init.thaw')) throw new NotWarmable(`the agent in snapshot ${snapId} cannot keep user processes frozen`);
    const r = await sysInit(agent, { hostname: id, machineId: randomBytes(16).toString('hex'), bootId: randomUUID(), envs: {} }, { thaw: false });
    // a capture whose freeze failed holds running processes: they would run in the slot now
    if (r.thawed !== false || r.frozen !== true) throw new NotWarmable(`snapshot ${snapId} was captured with its user processes running`);
    return { id, snapshotId: snapId, memFile: src.memFile, diskBacking: src.diskBacking, vm, spec, cleanup };
  }

  /** Puts a reusable snapshot first among those kept warm (the least recently used one may drop out). */
  private touchSnapshot(snapId: string): void {
    // (a create that resolved it before a concurrent delete must not bring it back)
    if (this.config.snapshotPoolSize <= 0 || this.unwarmable.has(snapId) || !this.snapshots.get(snapId)) return;
    const i = this.hotSnapshots.indexOf(snapId);
    if (i >= 0) this.hotSnapshots.splice(i, 1);
    this.hotSnapshots.unshift(snapId);
    for (const old of this.hotSnapshots.splice(this.config.snapshotPoolSize)) this.unhot(old);
  }

  /** Stops keeping a snapshot warm; its ready slot goes (one being prepared goes when it is done). */
  private unhot(snapId: string): void {
    const i = this.hotSnapshots.indexOf(snapId);
    if (i >= 0) this.hotSnapshots.splice(i, 1);
    for (let j = this.warm.length - 1; j >= 0; j--) {
      if (this.warm[j]!.snapshotId === snapId) void this.warm.splice(j, 1)[0]!.cleanup.run();
    }
  }

  /** A warm slot for `src`, or undefined (the create then prepares its own VM). */
  private takeWarm(src: RestoreSource, allowInternetAccess: boolean): WarmSlot | undefined {
    let found: WarmSlot | undefined;
    // slots have the network on and no volumes: other creates neither use nor refresh them; the
    // template slots are of `base` only (a create from another template leaves them alone)
    if (!src.volumes.length && allowInternetAccess && (src.snapshotId !== null || src.template === WARM_TEMPLATE)) {
      if (src.snapshotId !== null && src.snapshotKind === 'reusable') this.touchSnapshot(src.snapshotId);
      for (let i = 0; i < this.warm.length && !found; i++) {
        const slot = this.warm[i]!;
        if (slot.snapshotId !== src.snapshotId) continue;
        this.warm.splice(i--, 1);
        // the same files: the template was not rebuilt, the snapshot's chain not flattened since
        if (!slot.vm.gone && slot.vm.agent && slot.memFile === src.memFile && slot.diskBacking === src.diskBacking) found = slot;
        else void slot.cleanup.run(); // its QEMU died, or its source changed
      }
    }
    this.refillWarm();
    return found;
  }

  getSnapshot(id: string): SnapshotRecord {
    const snap = SNAPSHOT_ID_RE.test(id) ? this.snapshots.get(id) : undefined;
    if (!snap) throw notFound('snapshot', id);
    return snap;
  }

  /** Whether this host can restore `snap`, and if not which requirements differ. */
  compatibility(snap: SnapshotRecord): { compatible: boolean; mismatches: RequirementMismatch[] } {
    const mismatches = compareRequirements(snap.requirements, { ...this.host.profile, memoryMiB: snap.vmConfig.memoryMiB, vcpus: snap.vmConfig.vcpus });
    for (const f of [snap.vmConfig.kernel, snap.vmConfig.initrd]) {
      if (!fs.existsSync(f)) mismatches.push({ field: 'kernelRelease', snapshot: f, host: 'missing' });
    }
    return { compatible: mismatches.length === 0, mismatches };
  }

  /**
   * Captures a running sandbox's memory and disk at one paused instant into new layers and records
   * a snapshot of them. The sandbox is paused only for the capture and keeps running.
   */
  async snapshot(id: string, opts: { kind: SnapshotKind; metadata: Record<string, string> }): Promise<SnapshotRecord> {
    this.get(id);
    return this.locks.run(id, async () => {
      const rec = this.get(id);
      if (rec.state !== 'running') {
        throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a running sandbox can be snapshotted`, { details: { state: rec.state } });
      }
      const live = this.live.get(id);
      if (!live || !rec.vmSpec) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
      const snap = await this.layersLock.read(() => this.capture(rec, live.vm, opts.kind, opts.metadata, true));
      // the source's chain is compacted in the background, next under its lock: a long stream holds
      // up neither this call (nor a fork's child) nor, outside the layer lock, the collector
      void this.locks
        .run(id, () => this.compactChain(id, live.vm))
        .catch((err: unknown) => this.log.error({ sandboxId: id, err: errorMessage(err) }, 'compacting the disk chain failed'));
      // a new reusable snapshot is likely to be started from soon: one sandbox of it is prepared now
      if (snap.kind === 'reusable' && !snap.volumes.length) {
        this.touchSnapshot(snap.id);
        this.refillWarm();
      }
      return snap;
    });
  }

  /**
   * Captures a sandbox's memory and disk at one paused instant into new layers and records a
   * snapshot of them (callers hold the sandbox lock and the layer lock's read side). User processes
   * stay frozen across the capture: a clone runs them again only after its sys.init (clock, entropy,
   * identity). With `keepRunning` the source resumes and thaws right after; otherwise it stays
   * stopped and frozen (hibernation quits it next), unless the capture fails.
   */
  private async capture(rec: SandboxRecord, vm: Vm, kind: SnapshotKind, metadata: Record<string, string>, keepRunning: boolean): Promise<SnapshotRecord> {
    const id = rec.id;
    checkFreeDisk(this.config.dataDir, this.config.limits.minFreeDiskMiB, `capturing sandbox ${id}`);
    // process starts (and file work, with volumes) wait until the capture is over; those under way end first
    const drained = await this.gate.close(id, CAPTURE_DRAIN_MS);
    try {
      if (!drained && rec.volumes.length) {
        throw new NsError('volume_busy', `sandbox ${id}: a file transfer is still under way after ${CAPTURE_DRAIN_MS / 1000} s (its volumes cannot be unmounted for the capture meanwhile); retry when it is done`);
      }
      if (!drained) this.log.warn({ sandboxId: id }, 'capturing while a process start is still under way');
      return await this.captureGated(rec, vm, kind, metadata, keepRunning);
    } finally {
      this.gate.open(id);
    }
  }

  private async captureGated(rec: SandboxRecord, vm: Vm, kind: SnapshotKind, metadata: Record<string, string>, keepRunning: boolean): Promise<SnapshotRecord> {
    const id = rec.id;
    const snapId = newId('snap');
    const staging = path.join(this.layersDir, '.staging', snapId);
    fs.mkdirSync(staging, { mode: 0o700 });
    const ids = { mem: newId('lyr'), state: newId('lyr'), disk: newId('lyr') };
    const finalPath = { mem: path.join(this.layersDir, `${ids.mem}.mem`), state: path.join(this.layersDir, `${ids.state}.state`) };
    const diskLayerPath = path.join(this.layersDir, `${ids.disk}.qcow2`);
    const nextOverlay = path.join(this.sandboxDir(id), `disk-${Date.now().toString(36)}.qcow2`);
    let parent = rec.diskParentLayer;
    const switchRecorded = () => {
      this.store.patch(id, { vmSpec: vm.spec, diskParentLayer: ids.disk });
    };
    const phases: Record<string, number> = {};
    const freezeStart = Date.now();
    const agent = await this.liveAgent(rec).catch((err: unknown) => {
      this.log.warn({ sandboxId: id, err: errorMessage(err) }, 'capture without freezing user processes: the agent is unavailable');
      return undefined;
    });
    let frozen = false;
    if (agent) {
      try {
        if (this.config.faultInjection === 'freeze-fails') throw new Error('fault injection: the freeze failed');
        await agent.call('sys.freeze', {}, 10_000);
        frozen = true;
      } catch (err) {
        this.log.warn({ sandboxId: id, err: errorMessage(err) }, 'capture without freezing user processes');
      }
    }
    phases.freezeMs = Date.now() - freezeStart;
    const thaw = async () => {
      if (frozen && !vm.gone) {
        frozen = false;
        const thawed =
          this.config.faultInjection === 'thaw-fails-after-capture'
            ? Promise.reject(new Error('fault injection: the thaw was lost'))
            : agent?.call('sys.thaw', {}, 10_000);
        await thawed?.catch((err: unknown) => {
          // the next use of the sandbox thaws them (liveAgent); a frozen sandbox never serves commands
          const live = this.live.get(id);
          if (live?.vm === vm) live.needsThaw = true;
          this.log.error({ sandboxId: id, err: errorMessage(err) }, 'thawing user processes failed; retried on the next use');
        });
      }
    };
    if (rec.volumes.length) {
      if (!agent) {
        fs.rmSync(staging, { recursive: true, force: true });
        throw new NsError('agent_unavailable', `sandbox ${id}: its volumes cannot be unmounted for the capture: the agent is unavailable`);
      }
      try {
        await this.unmountVolumes(rec, agent);
      } catch (err) {
        fs.rmSync(staging, { recursive: true, force: true });
        await thaw();
        throw err;
      }
    }
    const remount = async () => {
      if (rec.volumes.length && agent && !vm.gone) {
        await this.mountVolumes(rec, agent).catch((err: unknown) => this.log.error({ sandboxId: id, err: errorMessage(err) }, 'remounting volumes after a capture failed'));
      }
    };
    let ok = false;
    try {
      const res = await captureSnapshot(
        vm,
        { mem: path.join(staging, 'mem'), state: path.join(staging, 'state'), disk: diskLayerPath, nextOverlay },
        {
          resume: keepRunning,
          durable: !keepRunning,
          virtualSizeBytes: rec.vmSpec!.diskSizeBytes,
          ownerUid: vm.spec.runAsUid,
          beforeSwitch: () => {
            // the layer is a copy of an overlay the sandbox's uid could write: before anything of
            // root's opens its chain, its header must name only what this sandbox's disk rests on:
            // its own lineage, or a template build's disk (public). Its parent is the layer the
            // header names (null: a template), which a background stream may have moved down from
            // the recorded one.
            checkQcow2Backing(diskLayerPath, (backing) => {
              const layer = this.lineageLayer(rec, backing);
              parent = layer ?? null;
              return layer !== undefined || this.isTemplateDisk(backing);
            });
            this.snapshots.insertLayer({ id: ids.disk, kind: 'disk', path: diskLayerPath, parentId: parent, bytes: allocatedBytes(diskLayerPath), createdAt: Date.now() });
          },
          switchFailed: () => this.snapshots.deleteLayer(ids.disk),
          onPaused: async () => {
            if (this.config.faultInjection === `kill-vm-during-${kind === 'hibernate' ? 'hibernate' : 'snapshot'}`) {
              // as if it were killed from outside
              process.kill(vm.pid, 'SIGKILL');
              await vm.exited;
            }
          },
        },
      );
      switchRecorded();
      if (keepRunning) {
        const thawStart = Date.now();
        await remount();
        await thaw();
        phases.thawMs = Date.now() - thawStart;
      }
      fs.renameSync(path.join(staging, 'mem'), finalPath.mem);
      fs.renameSync(path.join(staging, 'state'), finalPath.state);
      if (!keepRunning) fsyncDir(this.layersDir);
      const snap: SnapshotRecord = {
        id: snapId,
        sandboxId: id,
        kind,
        template: rec.template,
        metadata,
        envs: rec.envs,
        memLayer: ids.mem,
        stateLayer: ids.state,
        diskLayer: ids.disk,
        vmConfig: {
          kernel: vm.spec.kernel,
          initrd: vm.spec.initrd,
          cmdline: vm.spec.cmdline,
          memoryMiB: vm.spec.memoryMiB,
          vcpus: vm.spec.vcpus,
          diskSizeBytes: vm.spec.diskSizeBytes,
          allowInternetAccess: vm.spec.allowInternetAccess,
        },
        requirements: rec.requirements!,
        pauseMs: res.pauseMs,
        volumes: rec.volumes,
        createdAt: Date.now(),
      };
      this.snapshots.transaction(() => {
        const now = Date.now();
        this.snapshots.insertLayer({ id: ids.mem, kind: 'mem', path: finalPath.mem, parentId: null, bytes: allocatedBytes(finalPath.mem), createdAt: now });
        this.snapshots.insertLayer({ id: ids.state, kind: 'state', path: finalPath.state, parentId: null, bytes: allocatedBytes(finalPath.state), createdAt: now });
        this.snapshots.insert(snap);
      });
      ok = true;
      this.log.info({ sandboxId: id, snapshotId: snapId, kind, pauseMs: res.pauseMs, ms: res.totalMs, ...res.phases, ...phases }, 'snapshot created');
      return snap;
    } catch (err) {
      // the VM may have moved to its next overlay before the failure: keep the record true
      if (vm.spec.disk === nextOverlay) switchRecorded();
      for (const f of Object.values(finalPath)) fs.rmSync(f, { force: true });
      throw wrapError(err, `snapshot of sandbox ${id}`, 'snapshot_failed');
    } finally {
      // a failed capture leaves the source running, whatever it was for
      if (!ok && !keepRunning && !vm.gone) await vm.qmp.execute('cont').catch(() => {});
      if (!ok) await remount();
      if (keepRunning || !ok) await thaw();
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }

  /**
   * Hibernates a running sandbox: its memory and disk are captured at one instant to durable
   * storage as a `hibernate` snapshot, then its VM stops (no QEMU process, no RAM left). The
   * sandbox keeps its id, metadata and remaining timeout, and is `paused` until resumed.
   * Hibernating a paused sandbox returns its latest hibernation snapshot.
   */
  async hibernate(id: string, reason = 'hibernated by request', opts: { byTimeout?: boolean } = {}): Promise<SnapshotRecord> {
    this.get(id);
    return this.locks.run(id, () => this.hibernateHeld(id, reason, opts));
  }

  /** `hibernate`, for a caller that holds the sandbox's lock. */
  private async hibernateHeld(id: string, reason: string, opts: { byTimeout?: boolean }): Promise<SnapshotRecord> {
    const rec = this.get(id);
    if (rec.state === 'paused') {
      const latest = this.snapshots.hibernations(id)[0];
      if (latest) return latest;
    }
    if (rec.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a running sandbox can be hibernated`, { details: { state: rec.state } });
    }
    const live = this.live.get(id);
    if (!live || !rec.vmSpec) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
    // hibernated by its timeout: it resumes with its whole timeout again; otherwise with what was left
    const remainingMs = opts.byTimeout ? rec.timeoutMs : Math.max(1000, (rec.expiresAt ?? Date.now() + rec.timeoutMs) - Date.now());
    this.store.transition(id, 'running', 'hibernating', reason);
    this.crashPoint('crash-before-hibernate-capture');
    let snap: SnapshotRecord;
    try {
      snap = await this.layersLock.read(() => this.capture(this.get(id), live.vm, 'hibernate', {}, false));
    } catch (err) {
      if (live.vm.gone) {
        this.live.delete(id);
        live.release();
        this.removeFiles(id);
        this.releaseUid(id, rec.vmSpec);
        const why = `the VM exited during hibernation: ${errorMessage(err)}`;
        this.store.transition(id, 'hibernating', 'failed', why, { endedAt: Date.now(), endReason: why, errorCode: 'vm_exited', pid: null, diskParentLayer: null });
        this.dropHibernations(id);
        throw err;
      }
      this.store.transition(id, 'hibernating', 'running', `hibernation failed, still running: ${errorMessage(err)}`);
      throw err;
    }
    this.crashPoint('crash-after-hibernate-capture');
    this.live.delete(id);
    await live.vm.kill();
    live.release();
    this.removeFiles(id);
    this.releaseUid(id, rec.vmSpec);
    this.store.transition(id, 'hibernating', 'paused', reason, {
      pid: null,
      expiresAt: null,
      remainingMs,
      pausedAt: Date.now(),
      diskParentLayer: null,
    });
    // a sandbox's history keeps its last few hibernations (older ones: snapshot_not_latest anyway)
    for (const old of this.snapshots.hibernations(id).slice(KEEP_HIBERNATIONS)) this.snapshots.delete(old.id);
    this.onLayersReleased();
    this.log.info({ sandboxId: id, snapshotId: snap.id, reason }, 'sandbox hibernated');
    return snap;
  }

  /**
   * Resumes a paused sandbox as the same sandbox (same id, identity, metadata, remaining timeout)
   * from its latest hibernation snapshot, or from `snapshotId`, which must be that snapshot. A
   * running sandbox is returned as it is.
   */
  async resume(id: string, snapshotId?: string): Promise<SandboxRecord> {
    this.get(id);
    return this.locks.run(id, async () => {
      const rec = this.get(id);
      const latest = this.snapshots.hibernations(id)[0];
      if (snapshotId !== undefined) {
        const snap = this.getSnapshot(snapshotId);
        if (snap.kind !== 'hibernate') {
          throw new NsError(
            'bad_request',
            `snapshot ${snap.id} is a ${snap.kind} snapshot: start a new sandbox from it with Sandbox.create(snapshot_id=...) instead of resuming`,
            { details: { snapshotId: snap.id, kind: snap.kind } },
          );
        }
        if (snap.sandboxId !== id) throw new NsError('bad_request', `snapshot ${snap.id} belongs to sandbox ${snap.sandboxId}, not ${id}`);
        if (latest && snap.id !== latest.id) {
          throw new NsError('snapshot_not_latest', `snapshot ${snap.id} is not the latest hibernation of sandbox ${id} (${latest.id} is)`, {
            details: { snapshotId: snap.id, latest: latest.id },
          });
        }
      }
      if (rec.state === 'running') return rec;
      if (rec.state !== 'paused' || !latest) {
        throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a paused sandbox can be resumed`, { details: { state: rec.state } });
      }
      const compat = this.compatibility(latest);
      if (!compat.compatible) {
        throw new NsError(
          'snapshot_incompatible',
          `sandbox ${id} cannot be resumed on this host: ${compat.mismatches.map((m) => `${m.field} is ${m.snapshot} in its snapshot but ${m.host} here`).join('; ')}`,
          { details: { snapshotId: latest.id, mismatches: compat.mismatches } },
        );
      }
      await this.layersLock.read(() => this.boundSnapshotChain(latest));
      const reservation = this.admission.reserve(rec.memoryMiB);
      this.store.transition(id, 'paused', 'resuming', 'resume requested');
      const cleanup = new CleanupStack();
      cleanup.defer('release admission', reservation.release);
      const phases: Record<string, number> = {};
      const t0 = Date.now();
      try {
        const vm = await this.layersLock.read(async () => {
          const src = this.snapshotSource(latest);
          this.store.patch(id, { diskParentLayer: latest.diskLayer });
          // (a volume of its own can only be missing if it was at its creation: a volume a running or
          // paused sandbox mounts cannot be deleted)
          return (await this.restore(id, src, rec.allowInternetAccess, cleanup, phases, true)).vm;
        });
        this.crashPoint('crash-during-resume');
        const agent = await vm.connectAgent(15_000);
        await this.mountVolumes(this.get(id), agent);
        await this.initAgent(this.get(id), agent);
        const now = Date.now();
        const running = this.store.transition(id, 'resuming', 'running', 'resumed', {
          expiresAt: now + (rec.remainingMs ?? rec.timeoutMs),
          remainingMs: null,
          pausedAt: null,
        });
        cleanup.release();
        this.attach(id, vm, reservation.release);
        this.log.info({ sandboxId: id, ms: Date.now() - t0, ...phases }, 'sandbox resumed');
        return running;
      } catch (err) {
        const errors = await cleanup.run();
        for (const e of errors) this.log.error({ sandboxId: id, err: e.message }, 'cleanup after a failed resume');
        this.store.transition(id, 'resuming', 'paused', `resume failed: ${errorMessage(err)}`, { pid: null, diskParentLayer: null });
        throw wrapError(err, `resuming sandbox ${id}`, 'restore_failed');
      }
    });
  }

  listSnapshots(q: SnapshotQuery): { items: SnapshotRecord[]; nextToken: string | undefined } {
    return this.snapshots.list(q);
  }

  /** Bytes allocated by a snapshot's layers (its disk layer alone, not the chain under it). */
  snapshotBytes(s: SnapshotRecord): number {
    return [s.memLayer, s.stateLayer, s.diskLayer].reduce((sum, id) => sum + (this.snapshots.layer(id)?.bytes ?? 0), 0);
  }

  /** The file a disk layer's chain rests on below the layer store (a template's disk). */
  private async chainBase(layerPath: string): Promise<string> {
    const chain = await backingChain(layerPath);
    const base = chain.find((c) => !c.filename.startsWith(this.layersDir + '/'));
    if (!base) throw new NsError('internal', `disk layer ${layerPath} does not rest on a template disk`);
    return base.filename;
  }

  /** A new layer with the whole content of `layerId`'s chain, backing directly onto the template disk. */
  private async flatten(layerId: string): Promise<string> {
    const top = this.snapshots.layer(layerId);
    if (!top) throw new NsError('internal', `layer ${layerId} is missing`);
    const base = await this.chainBase(top.path);
    const id = newId('lyr');
    const out = path.join(this.layersDir, `${id}.qcow2`);
    const t0 = Date.now();
    await flattenLayer(top.path, base, out);
    this.snapshots.insertLayer({ id, kind: 'disk', path: out, parentId: null, bytes: allocatedBytes(out), createdAt: Date.now() });
    this.log.info({ layer: layerId, flat: id, ms: Date.now() - t0 }, 'flattened a deep disk layer chain');
    return id;
  }

  /** `boundChain` for a sandbox that is still running on `vm` (callers hold its lock); failures are logged. */
  private async compactChain(id: string, vm: Vm): Promise<void> {
    const rec = this.store.get(id);
    if (rec?.state !== 'running' || this.live.get(id)?.vm !== vm || !rec.diskParentLayer) return;
    await this.boundChain(id, vm, rec.diskParentLayer).catch((err: unknown) => {
      if (err instanceof NsError && err.code === 'cancelled') this.log.info({ sandboxId: id }, 'streaming the disk chain was cancelled (the sandbox is being killed)');
      else this.log.error({ sandboxId: id, err: errorMessage(err) }, 'bounding the disk chain failed (the sandbox keeps its deeper chain)');
    });
  }

  /**
   * The layer of the sandbox's recorded parent or of one of its ancestors at `file` (a disk chain
   * streamed in the background leaves the overlay on an older layer or on the template; a server
   * stopped or crashed before it recorded that leaves the record behind the header).
   */
  private lineageLayer(rec: SandboxRecord, file: string): string | undefined {
    for (let id = rec.diskParentLayer, n = 0; id && n < 1000; n++) {
      const layer = this.snapshots.layer(id);
      if (layer?.path === file) return id;
      id = layer?.parentId ?? null;
    }
    return undefined;
  }

  private isTemplateDisk(file: string): boolean {
    const templates = path.join(this.config.cacheDir, 'templates');
    if (path.normalize(file) !== file || path.basename(file) !== 'disk.qcow2' || path.dirname(path.dirname(file)) !== templates) return false;
    if (!/^[a-z0-9][a-z0-9-]*-[0-9a-f]{16}$/.test(path.basename(path.dirname(file)))) return false;
    try {
      return fs.lstatSync(file).isFile();
    } catch {
      return false;
    }
  }

  /** Keeps a running sandbox's own chain short: streams its layers into its overlay when too deep. */
  private async boundChain(id: string, vm: Vm, parentLayer: string): Promise<void> {
    if (this.snapshots.depth(parentLayer) <= MAX_CHAIN_DEPTH) return;
    const layer = this.snapshots.layer(parentLayer);
    if (!layer) return;
    const t0 = Date.now();
    await vm.streamDisk(await this.chainBase(layer.path));
    this.store.patch(id, { diskParentLayer: null });
    this.log.info({ sandboxId: id, ms: Date.now() - t0 }, 'streamed a deep disk chain into the active overlay');
    this.onLayersReleased();
  }

  /**
   * A new running sandbox whose memory and disk equal the source's at this instant; the source is
   * paused only for the capture and keeps its id, timeout and state. The capture is an internal
   * snapshot, never listed, removed once the child started (the layers it shares with the child
   * are held by the child).
   */
  async fork(
    id: string,
    opts: { metadata?: Record<string, string> | undefined; envs?: Record<string, string> | undefined; timeoutMs?: number | undefined },
  ): Promise<{ child: SandboxRecord; pauseMs: number | null }> {
    const src = this.get(id);
    if (src.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${src.state}: only a running sandbox can be forked`, { details: { state: src.state } });
    }
    // refuse before pausing the source when the child could not be admitted anyway
    this.admission.check(src.memoryMiB);
    checkFreeDisk(this.config.dataDir, this.config.limits.minFreeDiskMiB, 'forking a sandbox');
    const snap = await this.snapshot(id, { kind: 'fork', metadata: {} });
    try {
      const child = await this.create({
        template: src.template,
        snapshotId: snap.id,
        forkedFrom: id,
        metadata: opts.metadata ?? src.metadata,
        envs: opts.envs ?? {},
        timeoutMs: opts.timeoutMs ?? src.timeoutMs,
        allowInternetAccess: src.allowInternetAccess,
        // the source runs without the volumes that were already gone when it was created: so does the child
        allowMissingVolumes: true,
      });
      return { child, pauseMs: snap.pauseMs };
    } finally {
      this.snapshots.delete(snap.id);
      this.onLayersReleased();
    }
  }

  /** A sandbox that ended can never resume: its hibernation snapshots go (and their layers with the next collection). */
  private dropHibernations(id: string): void {
    for (const h of this.snapshots.hibernations(id)) this.snapshots.delete(h.id);
  }

  /** Deletes a snapshot's record at once; its layers are freed by the collector when unreferenced. */
  deleteSnapshot(id: string): void {
    const snap = this.getSnapshot(id);
    if (snap.kind === 'hibernate') {
      const owner = this.store.get(snap.sandboxId);
      const latest = this.snapshots.hibernations(snap.sandboxId)[0];
      if (owner && !isTerminal(owner.state) && latest?.id === snap.id) {
        throw new NsError('snapshot_in_use', `snapshot ${id} is the latest hibernation of sandbox ${snap.sandboxId}, which resumes from it; kill the sandbox to drop it`, {
          details: { snapshotId: id, sandboxId: snap.sandboxId },
        });
      }
    }
    if (!this.snapshots.delete(snap.id)) throw notFound('snapshot', id);
    this.unhot(snap.id);
    this.unwarmable.delete(snap.id);
    this.log.info({ snapshotId: id }, 'snapshot deleted');
    this.onLayersReleased();
  }

  /**
   * Mounts a sandbox's volumes in the guest (before its user processes may run); those deleted before
   * it was created from its snapshot have a placeholder device and stay unmounted.
   */
  private async mountVolumes(rec: SandboxRecord, agent: AgentClient): Promise<void> {
    for (const v of rec.volumes) {
      if (!this.volumes.exists(v)) continue;
      try {
        await agent.call('vol.mount', { tag: v.tag, path: v.path, timeoutMs: 20_000 }, 30_000);
      } catch (err) {
        throw wrapError(err, `mounting volume ${v.name} at ${v.path}`, 'vm_start_failed');
      }
    }
  }

  /**
   * Unmounts a sandbox's volumes before a capture (QEMU cannot migrate a mounted 9p share). If one
   * is busy, the others are mounted again and the capture is refused with 409 `volume_busy`.
   */
  private async unmountVolumes(rec: SandboxRecord, agent: AgentClient): Promise<void> {
    const done: VolumeAttachment[] = [];
    for (const v of rec.volumes) {
      try {
        await agent.call('vol.unmount', { path: v.path }, 30_000);
        done.push(v);
      } catch (err) {
        for (const d of done) await agent.call('vol.mount', { tag: d.tag, path: d.path }, 30_000).catch(() => {});
        if (err instanceof NsError && err.code === 'volume_busy') {
          throw new NsError('volume_busy', `sandbox ${rec.id}: ${err.message.replace(/^vol\.unmount: /, '')}; close the files on the volume and retry`, {
            details: { volume: v.name, path: v.path },
          });
        }
        throw err;
      }
    }
  }

  /** Connects to the agent and applies the sandbox's identity, clock, entropy and environment. */
  private async connectAndInit(rec: SandboxRecord, vm: Vm, timeoutMs: number): Promise<AgentClient> {
    const agent = await vm.connectAgent(timeoutMs);
    // a reconnection may follow an interrupted capture: volumes back (idempotent) before any thaw
    await this.mountVolumes(rec, agent);
    await this.initAgent(rec, agent);
    return agent;
  }

  /** sys.init: clock, entropy, identity, default environment; then the user processes run. */
  private async initAgent(rec: SandboxRecord, agent: AgentClient): Promise<void> {
    const r = await sysInit(agent, { hostname: rec.id, machineId: rec.identity.machineId, bootId: rec.identity.bootId, envs: rec.envs });
    this.log.debug({ sandboxId: rec.id, timingsUs: r.timingsUs }, 'sys.init');
  }

  /** Starts watching a running VM. */
  private attach(id: string, vm: Vm, release: () => void, opts: { adopted?: boolean } = {}): void {
    if (this.closed) {
      // an operation that outlived close(): the VM runs on, the next server re-adopts it
      vm.disconnectAgent();
      vm.qmp.close();
      return;
    }
    const live: Live = { vm, release };
    this.live.set(id, live);
    this.watchDiskFull(id, live, opts.adopted === true);
    void vm.exited.then((exit) => {
      if (exit.kind !== 'died' || this.closing) return;
      this.locks.run(id, async () => {
        if (this.live.get(id) !== live) return;
        this.live.delete(id);
        live.release();
        const rec = this.store.get(id);
        if (!rec || isTerminal(rec.state)) return;
        this.removeFiles(id);
        this.releaseUid(id, rec.vmSpec);
        const reason = `the VM exited unexpectedly: ${exit.detail}`;
        this.store.transition(id, rec.state, 'failed', reason, {
          endedAt: Date.now(),
          endReason: reason,
          errorCode: 'vm_exited',
          pid: null,
          diskParentLayer: null,
        });
        this.dropHibernations(id);
        this.log.warn({ sandboxId: id, detail: exit.detail }, 'sandbox VM died');
        this.onLayersReleased();
      }).catch((err: unknown) => this.log.error({ sandboxId: id, err: errorMessage(err) }, 'recording a dead VM failed'));
    });
  }

  /**
   * A guest write that finds the host disk full stops the VM (QEMU's `werror=enospc`: the request is
   * kept and retried on `cont`, so the guest sees no error and loses nothing). Such a VM is resumed
   * as soon as the write can succeed: tried every second (a retry that fails again just stops it
   * again), under the sandbox's lock so that it never meets a capture's own pause. A VM that a
   * restarted server re-adopts (`adopted`) is checked at once: it may have stopped meanwhile.
   */
  private watchDiskFull(id: string, live: Live, adopted: boolean): void {
    const { vm } = live;
    const stopTimer = () => {
      clearInterval(live.diskFullTimer);
      live.diskFullTimer = undefined;
    };
    // the episode ends once the VM has stayed running for a whole period (a resumed write that
    // fails again stops it again at once)
    let runningSince = 0;
    const retry = () =>
      this.locks.run(id, async () => {
        if (this.closing || this.live.get(id) !== live || vm.gone) return stopTimer();
        const { status } = await vm.qmp.execute<{ status: string }>('query-status');
        if (status === 'io-error') {
          runningSince = 0;
          await vm.qmp.execute('cont');
        } else if (!runningSince) {
          runningSince = Date.now();
        } else {
          stopTimer();
          this.log.info({ sandboxId: id }, 'VM running again after a full host disk');
        }
      });
    const start = () => {
      runningSince = 0;
      if (live.diskFullTimer || this.closing) return;
      this.log.warn({ sandboxId: id }, 'the host disk is full: QEMU stopped the VM on a guest write; it resumes when space is freed');
      live.diskFullTimer = setInterval(() => {
        retry().catch((err: unknown) => this.log.warn({ sandboxId: id, err: errorMessage(err) }, 'resuming a VM stopped on a full disk failed'));
      }, DISK_FULL_RETRY_MS);
      live.diskFullTimer.unref();
    };
    vm.qmp.on('event', (e: QmpEvent) => {
      if (e.event === 'BLOCK_IO_ERROR' && e.data?.action === 'stop') start();
    });
    if (adopted) {
      vm.qmp
        .execute<{ status: string }>('query-status')
        .then(({ status }) => status === 'io-error' && start())
        .catch(() => {});
    }
  }

  /** The agent of a running sandbox, reconnecting (and re-initializing) when the session was lost. */
  async agent(id: string): Promise<AgentClient> {
    const rec = this.get(id);
    if (rec.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}`, { details: { state: rec.state } });
    }
    return this.liveAgent(rec);
  }

  /**
   * The agent for starting a process or for file work, once no capture of the sandbox is under way:
   * a capture freezes user processes (the agent refuses new ones) and unmounts volumes (a file
   * written under one would land on the root disk, hidden once it is mounted again). Such a
   * request waits for the capture; one already under way counts until `done` and the capture waits
   * for it first. In a sandbox with volumes that is every file request (a guest symlink may lead
   * into a volume, whatever the path says); in one without, file work is never held up.
   */
  async agentFor(id: string, use: 'start' | 'files'): Promise<{ agent: AgentClient; done: () => void }> {
    const rec = this.get(id);
    // (in a sandbox with volumes every file request counts: a guest symlink may lead into one)
    const gated = use === 'start' || rec.volumes.length > 0;
    const done = gated ? await this.gate.enter(id) : () => {};
    try {
      return { agent: await this.agent(id), done };
    } catch (err) {
      done();
      throw err;
    }
  }

  /** The agent of a sandbox's live VM, whatever its state (lifecycle operations in progress use it). */
  private async liveAgent(rec: SandboxRecord): Promise<AgentClient> {
    const id = rec.id;
    const live = this.live.get(id);
    if (!live) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
    const current = live.vm.agent;
    if (current && !live.needsThaw) return current;
    live.agent ??= (async () => {
      if (!current) return this.connectAndInit(rec, live.vm, 10_000); // sys.init thaws too
      await current.call('sys.thaw', {}, 10_000).catch((err: unknown) => {
        throw new NsError('agent_unavailable', `its processes are still frozen after an interrupted snapshot and did not thaw: ${errorMessage(err)}`);
      });
      return current;
    })()
      .then((agent) => {
        live.needsThaw = false;
        return agent;
      })
      .finally(() => {
        live.agent = undefined;
      });
    try {
      return await live.agent;
    } catch (err) {
      if (live.vm.gone) throw new NsError('sandbox_not_running', `sandbox ${id}: its VM exited`);
      throw wrapError(err, `sandbox ${id}`, 'agent_unavailable');
    }
  }

  async kill(id: string, reason = 'killed by request'): Promise<SandboxRecord> {
    this.get(id);
    // a disk chain streamed in the background holds the sandbox's lock: a kill does not wait for it
    await this.live.get(id)?.vm.cancelStream();
    return this.locks.run(id, () => this.killHeld(id, reason));
  }

  /** `kill`, for a caller that holds the sandbox's lock. */
  private async killHeld(id: string, reason: string): Promise<SandboxRecord> {
    const rec = this.get(id);
    if (isTerminal(rec.state)) return rec;
    // (already killing: an earlier kill failed half-way; this one finishes it)
    if (rec.state !== 'killing') this.store.transition(id, rec.state, 'killing', reason);
    this.hibernateRetryAt.delete(id);
    this.dropHibernations(id);
    const live = this.live.get(id);
    if (live) {
      this.live.delete(id);
      await live.vm.kill();
      live.release();
    } else if (rec.pid && rec.vmSpec) {
      // a VM this server does not drive (should not happen): make sure it is gone
      const vm = await Vm.adopt(this.host.profile, rec.vmSpec, rec.pid);
      await vm?.kill();
    }
    this.removeFiles(id);
    this.releaseUid(id, rec.vmSpec);
    const done = this.store.transition(id, 'killing', 'killed', reason, { endedAt: Date.now(), endReason: reason, pid: null, diskParentLayer: null });
    this.log.info({ sandboxId: id, reason }, 'sandbox killed');
    this.onLayersReleased();
    return done;
  }

  setTimeout(id: string, timeoutMs: number): SandboxRecord {
    const rec = this.get(id);
    if (rec.state !== 'running') throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}`, { details: { state: rec.state } });
    this.store.patch(id, { timeoutMs, expiresAt: Date.now() + timeoutMs });
    return this.get(id);
  }

  private async reap(): Promise<void> {
    try {
      await this.reapOnce();
    } catch (err) {
      if (!this.closing) this.log.error({ err: errorMessage(err) }, 'timeout reaper failed');
    }
  }

  /** Sandboxes whose timeout-hibernation failed, and when to try again. */
  private readonly hibernateRetryAt = new Map<string, number>();

  private async reapOnce(): Promise<void> {
    const now = Date.now();
    const expired = this.store.expired(now);
    if (expired.length) await this.faultWait('reaper');
    for (const rec of expired) {
      if (this.closing) return;
      if (this.locks.busy(rec.id)) continue;
      const why = `timeout: no setTimeout within ${rec.timeoutMs} ms`;
      if ((this.hibernateRetryAt.get(rec.id) ?? 0) > now) continue;
      try {
        // checked again under the lock: an earlier sandbox of the list may have taken seconds, during
        // which this one's timeout may have been extended (or it was killed, or hibernated)
        await this.locks.run(rec.id, async () => {
          const cur = this.store.get(rec.id);
          if (cur?.state !== 'running' || cur.expiresAt === null || cur.expiresAt > Date.now()) return;
          if (cur.onTimeout === 'hibernate') await this.hibernateHeld(rec.id, why, { byTimeout: true });
          else await this.killHeld(rec.id, why);
        });
        this.hibernateRetryAt.delete(rec.id);
      } catch (err) {
        // a failed hibernation (volume busy, disk full) keeps the sandbox and its state: retried later
        if (rec.onTimeout === 'hibernate') this.hibernateRetryAt.set(rec.id, now + 30_000);
        this.log.error({ sandboxId: rec.id, err: errorMessage(err) }, `${rec.onTimeout === 'hibernate' ? 'hibernating' : 'killing'} an expired sandbox failed`);
      }
    }
    if (this.config.pausedRetentionMs > 0) {
      for (const rec of this.store.pausedBefore(now - this.config.pausedRetentionMs)) {
        if (this.closing) return;
        if (this.locks.busy(rec.id)) continue;
        const why = `paused for longer than the retention of ${this.config.pausedRetentionMs} ms`;
        await this.locks
          .run(rec.id, async () => {
            const cur = this.store.get(rec.id);
            if (cur?.state !== 'paused' || cur.pausedAt === null || cur.pausedAt > Date.now() - this.config.pausedRetentionMs) return;
            await this.killHeld(rec.id, why);
          })
          .catch((err: unknown) => this.log.error({ sandboxId: rec.id, err: errorMessage(err) }, 'killing a paused sandbox past its retention failed'));
      }
    }
    if (this.config.endedRetentionMs > 0 && Math.random() < 0.01) this.store.pruneEnded(now - this.config.endedRetentionMs);
  }

  private removeFiles(id: string): void {
    fs.rmSync(this.sandboxDir(id), { recursive: true, force: true });
  }
}

/**
 * sys.init: the host's clock and fresh host entropy, with the given identity and default environment;
 * then the user processes run, unless `thaw: false` (the answer says whether they were thawed and
 * whether they are frozen).
 */
function sysInit(
  agent: AgentClient,
  identity: { hostname: string; machineId: string; bootId: string; envs: Record<string, string> },
  opts: { thaw?: false } = {},
): Promise<{ timingsUs?: Record<string, number>; thawed?: boolean; frozen?: boolean }> {
  return agent.call('sys.init', { timeMs: Date.now(), entropy: randomBytes(64).toString('base64'), ...identity, ...opts });
}

function sameVolumes(requested: Record<string, string>, attached: VolumeAttachment[]): boolean {
  const r = Object.entries(requested);
  return r.length === attached.length && r.every(([p, name]) => attached.some((a) => a.path === p && a.name === name));
}

function describeVolumes(attached: VolumeAttachment[]): string {
  return attached.length ? attached.map((a) => `${a.name} at ${a.path}`).join(', ') : 'none';
}
