import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  allocatedBytes,
  AgentClient,
  backingChain,
  flattenLayer,
  captureSnapshot,
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
  type RequirementMismatch,
  type RestoreRequirements,
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
import { KeyedMutex, newId, RwLock, SANDBOX_ID_RE } from './util.js';

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
}

/** What a new sandbox is restored from: a template snapshot or a snapshot of a sandbox. */
interface RestoreSource {
  template: string;
  snapshotId: string | null;
  memFile: string;
  stateFile: string;
  /** The file the sandbox's first overlay backs onto. */
  diskBacking: string;
  diskParentLayer: string | null;
  vm: VmConfig;
  requirements: RestoreRequirements;
  envs: Record<string, string>;
}

export const SNAPSHOT_ID_RE = /^snap_[0-9a-z]{16}$/;

/**
 * Longest chain of frozen disk layers under a sandbox's overlay. Deeper chains are flattened: a
 * restore from a deeper layer first merges it into one layer on the template disk, and a running
 * sandbox whose own chain grew past it streams its layers into its overlay.
 */
export const MAX_CHAIN_DEPTH = 8;

/** A sandbox whose VM this server drives. */
interface Live {
  vm: Vm;
  release: () => void;
  agent?: Promise<AgentClient> | undefined;
}

/**
 * Owns every sandbox's VM: creates them from template snapshots, serializes lifecycle operations
 * per sandbox, watches for VMs that die, enforces timeouts, and re-adopts running VMs after a
 * server restart.
 */
export class SandboxManager {
  private readonly live = new Map<string, Live>();
  private readonly locks = new KeyedMutex();
  private readonly admission: Admission;
  private reaper: NodeJS.Timeout | undefined;
  private closing = false;
  /** Snapshot captures and restores read the layer store; the garbage collector writes it. */
  readonly layersLock = new RwLock();
  /** Called when layers may have lost their last reference (a sandbox ended, a snapshot was deleted). */
  onLayersReleased: () => void = () => {};

  constructor(
    private readonly config: Config,
    private readonly store: SandboxStore,
    private readonly snapshots: SnapshotStore,
    private readonly host: HostContext,
    private readonly log: Logger,
  ) {
    this.admission = new Admission(config.limits);
  }

  get layersDir(): string {
    return path.join(this.config.dataDir, 'layers');
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
      const target = recoveryTarget(rec.state, vm !== undefined);
      if (target === 'adopt' && vm) {
        adopted.add(vm.pid);
        if (rec.vmSpec?.runAsUid !== undefined) {
          adoptedUids.add(rec.vmSpec.runAsUid);
          this.host.uids?.claim(rec.vmSpec.runAsUid, this.uidOwner(rec.id));
        }
        const reservation = this.admission.reserve(rec.memoryMiB);
        await this.reconcile(rec, vm);
        this.attach(rec.id, vm, reservation.release);
        this.log.info({ sandboxId: rec.id, pid: vm.pid }, 're-adopted running sandbox');
        // reconnect now: sys.init also thaws user processes an interrupted snapshot left frozen
        void this.agent(rec.id).catch((err: unknown) => this.log.warn({ sandboxId: rec.id, err: errorMessage(err) }, 'agent of a re-adopted sandbox unavailable'));
        continue;
      }
      await vm?.kill();
      this.removeFiles(rec.id);
      this.releaseUid(rec.id, rec.vmSpec);
      const reason = rec.state === 'killing' ? 'killed (finished after a server restart)' : `its VM was gone after a server restart (was ${rec.state})`;
      this.store.transition(rec.id, rec.state, target as SandboxState, reason, {
        endedAt: Date.now(),
        endReason: reason,
        errorCode: target === 'failed' ? 'vm_exited' : null,
        pid: null,
        diskParentLayer: null,
      });
      this.log.warn({ sandboxId: rec.id, from: rec.state, to: target }, 'recovered sandbox after restart');
    }
    this.killOrphans(adopted);
    this.host.uids?.sweep(`${this.config.dataDir} `, adoptedUids);
    this.reaper = setInterval(() => void this.reap(), this.config.reaperIntervalMs);
    this.reaper.unref();
  }

  /**
   * Makes a re-adopted sandbox's record agree with its QEMU: a server that died in the middle of a
   * snapshot may have left the VM stopped, or switched to its next overlay without recording it.
   */
  private async reconcile(rec: SandboxRecord, vm: Vm): Promise<void> {
    try {
      const active = await vm.activeDisk();
      if (rec.vmSpec && active.file !== rec.vmSpec.disk) {
        const parent = active.backingFile ? this.snapshots.layerByPath(active.backingFile) : undefined;
        vm.spec.disk = active.file;
        vm.spec.diskNode = active.node;
        this.store.patch(rec.id, { vmSpec: vm.spec, ...(parent ? { diskParentLayer: parent.id } : {}) });
        this.log.warn({ sandboxId: rec.id, disk: active.file }, 'recorded the overlay an interrupted snapshot had switched to');
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
      if (!cmdline.includes(sandboxesDir)) continue;
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
    for (const l of this.live.values()) {
      l.vm.removeAllListeners();
      l.vm.qmp.removeAllListeners('close');
      l.vm.disconnectAgent();
      l.vm.qmp.close();
    }
    this.live.clear();
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
  private async restoreSource(req: CreateSandboxRequest): Promise<RestoreSource> {
    if (req.snapshotId === undefined) {
      const t = this.host.template(req.template);
      return {
        template: t.name,
        snapshotId: null,
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
      };
    }
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
    if (this.snapshots.depth(snap.diskLayer) > MAX_CHAIN_DEPTH) {
      const flat = await this.flatten(snap.diskLayer);
      this.snapshots.setDiskLayer(snap.id, flat);
      snap.diskLayer = flat;
      this.onLayersReleased();
    }
    const layer = (id: string) => {
      const l = this.snapshots.layer(id);
      if (!l || !fs.existsSync(l.path)) throw new NsError('internal', `snapshot ${snap.id}: layer ${id} is missing`);
      return l;
    };
    return {
      template: snap.template,
      snapshotId: snap.id,
      memFile: layer(snap.memLayer).path,
      stateFile: layer(snap.stateLayer).path,
      diskBacking: layer(snap.diskLayer).path,
      diskParentLayer: snap.diskLayer,
      vm: snap.vmConfig,
      requirements: snap.requirements,
      envs: snap.envs,
    };
  }

  async create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    if (this.closing) throw new NsError('shutting_down', 'the server is shutting down');
    // the garbage collector waits while the source's layers are being cloned
    return this.layersLock.read(async () => {
      const src = await this.restoreSource(req);
      checkFreeDisk(this.config.dataDir, this.config.limits.minFreeDiskMiB, 'creating a sandbox');
      const reservation = this.admission.reserve(src.vm.memoryMiB);
      const id = newId('sbx');
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
        updatedAt: now,
      });
      return this.locks.run(id, async () => {
        const t0 = Date.now();
        const cleanup = new CleanupStack();
        cleanup.defer('release admission', reservation.release);
        const phases: Record<string, number> = {};
        try {
          const vm = await this.restore(id, src, req.allowInternetAccess, cleanup, phases);
          const rec = this.store.get(id)!;
          let t = Date.now();
          const agent = await vm.connectAgent(15_000);
          phases.agentMs = Date.now() - t;
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
    });
  }

  /** Prepares the sandbox's RAM file and disk from `src` and restores its device state. */
  private async restore(id: string, src: RestoreSource, allowInternetAccess: boolean, cleanup: CleanupStack, phases: Record<string, number>): Promise<Vm> {
    let t = Date.now();
    const lap = (name: string) => {
      phases[name] = Date.now() - t;
      t = Date.now();
    };
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
    await Promise.all([cloneFile(src.memFile, spec.ramFile), createOverlay(src.diskBacking, spec.disk)]);
    if (this.host.uids) {
      const uid = this.host.uids.allocate(this.uidOwner(id));
      cleanup.defer('release uid', () => this.host.uids?.release(uid, this.uidOwner(id)));
      spec.runAsUid = uid;
      fs.mkdirSync(spec.runDir, { mode: 0o700 });
      chownTree(dir, uid);
    }
    lap('prepareMs');
    const vm = await Vm.launch(this.host.profile, spec, true);
    cleanup.defer('kill vm', () => vm.kill());
    this.store.patch(id, { pid: vm.pid, vmSpec: spec });
    lap('launchMs');
    await vm.restoreState(src.stateFile);
    lap('restoreMs');
    return vm;
  }

  getSnapshot(id: string): SnapshotRecord {
    const snap = SNAPSHOT_ID_RE.test(id) ? this.snapshots.get(id) : undefined;
    if (!snap) throw notFound('snapshot', id);
    return snap;
  }

  /** Whether this host can restore `snap`, and if not which requirements differ. */
  compatibility(snap: SnapshotRecord): { compatible: boolean; mismatches: RequirementMismatch[] } {
    const mismatches = compareRequirements(snap.requirements, this.host.profile);
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
    return this.locks.run(id, () =>
      this.layersLock.read(async () => {
        const rec = this.get(id);
        if (rec.state !== 'running') {
          throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}: only a running sandbox can be snapshotted`, { details: { state: rec.state } });
        }
        const live = this.live.get(id);
        if (!live || !rec.vmSpec) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
        const vm = live.vm;
        checkFreeDisk(this.config.dataDir, this.config.limits.minFreeDiskMiB, 'creating a snapshot');
        const snapId = newId('snap');
        const staging = path.join(this.layersDir, '.staging', snapId);
        fs.mkdirSync(staging, { mode: 0o700 });
        const ids = { mem: newId('lyr'), state: newId('lyr'), disk: newId('lyr') };
        const finalPath = { mem: path.join(this.layersDir, `${ids.mem}.mem`), state: path.join(this.layersDir, `${ids.state}.state`) };
        const diskLayerPath = path.join(this.layersDir, `${ids.disk}.qcow2`);
        const nextOverlay = path.join(this.sandboxDir(id), `disk-${Date.now().toString(36)}.qcow2`);
        const parent = rec.diskParentLayer;
        const switchRecorded = () => {
          this.store.patch(id, { vmSpec: vm.spec, diskParentLayer: ids.disk });
        };
        // user processes stay frozen across the capture: a clone runs them again only after its
        // sys.init (clock, entropy, identity); the source thaws right after
        const agent = await this.agent(id).catch((err: unknown) => {
          this.log.warn({ sandboxId: id, err: errorMessage(err) }, 'snapshot without freezing user processes: the agent is unavailable');
          return undefined;
        });
        let frozen = false;
        if (agent) {
          try {
            await agent.call('sys.freeze', {}, 10_000);
            frozen = true;
          } catch (err) {
            this.log.warn({ sandboxId: id, err: errorMessage(err) }, 'snapshot without freezing user processes');
          }
        }
        const thaw = async () => {
          if (frozen && !vm.gone) {
            frozen = false;
            await agent?.call('sys.thaw', {}, 10_000).catch((err: unknown) => this.log.error({ sandboxId: id, err: errorMessage(err) }, 'thawing user processes failed'));
          }
        };
        try {
          const res = await captureSnapshot(
            vm,
            { mem: path.join(staging, 'mem'), state: path.join(staging, 'state'), disk: diskLayerPath, nextOverlay },
            {
              resume: true,
              virtualSizeBytes: rec.vmSpec.diskSizeBytes,
              ownerUid: vm.spec.runAsUid,
              beforeSwitch: () =>
                this.snapshots.insertLayer({ id: ids.disk, kind: 'disk', path: diskLayerPath, parentId: parent, bytes: allocatedBytes(diskLayerPath), createdAt: Date.now() }),
              switchFailed: () => this.snapshots.deleteLayer(ids.disk),
              onPaused: async () => {
                if (this.config.faultInjection === 'kill-vm-during-snapshot') {
                  // as if it were killed from outside
                  process.kill(vm.pid, 'SIGKILL');
                  await vm.exited;
                }
              },
            },
          );
          switchRecorded();
          await thaw();
          fs.renameSync(path.join(staging, 'mem'), finalPath.mem);
          fs.renameSync(path.join(staging, 'state'), finalPath.state);
          const snap: SnapshotRecord = {
            id: snapId,
            sandboxId: id,
            kind: opts.kind,
            template: rec.template,
            metadata: opts.metadata,
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
            createdAt: Date.now(),
          };
          this.snapshots.transaction(() => {
            const now = Date.now();
            this.snapshots.insertLayer({ id: ids.mem, kind: 'mem', path: finalPath.mem, parentId: null, bytes: allocatedBytes(finalPath.mem), createdAt: now });
            this.snapshots.insertLayer({ id: ids.state, kind: 'state', path: finalPath.state, parentId: null, bytes: allocatedBytes(finalPath.state), createdAt: now });
            this.snapshots.insert(snap);
          });
          this.log.info({ sandboxId: id, snapshotId: snapId, pauseMs: res.pauseMs, ms: res.totalMs }, 'snapshot created');
          await this.boundChain(id, vm, ids.disk).catch((err: unknown) =>
            this.log.error({ sandboxId: id, err: errorMessage(err) }, 'bounding the disk chain failed (the sandbox keeps its deeper chain)'),
          );
          return snap;
        } catch (err) {
          // the VM may have moved to its next overlay before the failure: keep the record true
          if (vm.spec.disk === nextOverlay) switchRecorded();
          for (const f of Object.values(finalPath)) fs.rmSync(f, { force: true });
          throw wrapError(err, `snapshot of sandbox ${id}`, 'snapshot_failed');
        } finally {
          await thaw();
          fs.rmSync(staging, { recursive: true, force: true });
        }
      }),
    );
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
      });
      return { child, pauseMs: snap.pauseMs };
    } finally {
      this.snapshots.delete(snap.id);
      this.onLayersReleased();
    }
  }

  /** Deletes a snapshot's record at once; its layers are freed by the collector when unreferenced. */
  deleteSnapshot(id: string): void {
    const snap = this.getSnapshot(id);
    if (!this.snapshots.delete(snap.id)) throw notFound('snapshot', id);
    this.log.info({ snapshotId: id }, 'snapshot deleted');
    this.onLayersReleased();
  }

  /** Connects to the agent and applies the sandbox's identity, clock, entropy and environment. */
  private async connectAndInit(rec: SandboxRecord, vm: Vm, timeoutMs: number): Promise<AgentClient> {
    const agent = await vm.connectAgent(timeoutMs);
    await this.initAgent(rec, agent);
    return agent;
  }

  /** sys.init: clock, entropy, identity, default environment; then the user processes run. */
  private async initAgent(rec: SandboxRecord, agent: AgentClient): Promise<void> {
    const r = await agent.call<{ timingsUs?: Record<string, number> }>('sys.init', {
      timeMs: Date.now(),
      entropy: randomBytes(64).toString('base64'),
      hostname: rec.id,
      machineId: rec.identity.machineId,
      bootId: rec.identity.bootId,
      envs: rec.envs,
    });
    this.log.debug({ sandboxId: rec.id, timingsUs: r.timingsUs }, 'sys.init');
  }

  /** Starts watching a running VM. */
  private attach(id: string, vm: Vm, release: () => void): void {
    const live: Live = { vm, release };
    this.live.set(id, live);
    void vm.exited.then((exit) => {
      if (exit.kind !== 'died' || this.closing) return;
      void this.locks.run(id, async () => {
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
        this.log.warn({ sandboxId: id, detail: exit.detail }, 'sandbox VM died');
        this.onLayersReleased();
      });
    });
  }

  /** The agent of a running sandbox, reconnecting (and re-initializing) when the session was lost. */
  async agent(id: string): Promise<AgentClient> {
    const rec = this.get(id);
    if (rec.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}`, { details: { state: rec.state } });
    }
    const live = this.live.get(id);
    if (!live) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
    const current = live.vm.agent;
    if (current) return current;
    live.agent ??= this.connectAndInit(rec, live.vm, 10_000).finally(() => {
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
    return this.locks.run(id, async () => {
      const rec = this.get(id);
      if (isTerminal(rec.state)) return rec;
      this.store.transition(id, rec.state, 'killing', reason);
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
    });
  }

  setTimeout(id: string, timeoutMs: number): SandboxRecord {
    const rec = this.get(id);
    if (rec.state !== 'running') throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}`, { details: { state: rec.state } });
    this.store.patch(id, { timeoutMs, expiresAt: Date.now() + timeoutMs });
    return this.get(id);
  }

  private async reap(): Promise<void> {
    const now = Date.now();
    for (const rec of this.store.expired(now)) {
      if (this.locks.busy(rec.id)) continue;
      try {
        await this.kill(rec.id, `timeout: no setTimeout within ${rec.timeoutMs} ms`);
      } catch (err) {
        this.log.error({ sandboxId: rec.id, err: errorMessage(err) }, 'killing an expired sandbox failed');
      }
    }
    if (this.config.endedRetentionMs > 0 && Math.random() < 0.01) this.store.pruneEnded(now - this.config.endedRetentionMs);
  }

  private removeFiles(id: string): void {
    fs.rmSync(this.sandboxDir(id), { recursive: true, force: true });
  }
}
