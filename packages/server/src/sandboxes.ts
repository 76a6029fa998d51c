import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  AgentClient,
  chownTree,
  CleanupStack,
  cloneFile,
  createOverlay,
  errorMessage,
  NsError,
  processVmId,
  Vm,
  wrapError,
  type TemplateInfo,
  type VmSpec,
} from '@nullspace/runtime';
import { Admission } from './admission.js';
import type { Config } from './config.js';
import { notFound } from './errors.js';
import type { HostContext } from './hostctx.js';
import { isTerminal, recoveryTarget, type SandboxState } from './lifecycle.js';
import type { Logger } from './log.js';
import { SandboxStore, type ListQuery, type SandboxRecord } from './store/sandboxes.js';
import { KeyedMutex, newId, SANDBOX_ID_RE } from './util.js';

export interface CreateSandboxRequest {
  template: string;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  timeoutMs: number;
  allowInternetAccess: boolean;
}

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

  constructor(
    private readonly config: Config,
    private readonly store: SandboxStore,
    private readonly host: HostContext,
    private readonly log: Logger,
  ) {
    this.admission = new Admission(config.limits);
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
        this.attach(rec.id, vm, reservation.release);
        this.log.info({ sandboxId: rec.id, pid: vm.pid }, 're-adopted running sandbox');
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
      });
      this.log.warn({ sandboxId: rec.id, from: rec.state, to: target }, 'recovered sandbox after restart');
    }
    this.killOrphans(adopted);
    this.host.uids?.sweep(`${this.config.dataDir} `, adoptedUids);
    this.reaper = setInterval(() => void this.reap(), this.config.reaperIntervalMs);
    this.reaper.unref();
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

  async create(req: CreateSandboxRequest): Promise<SandboxRecord> {
    if (this.closing) throw new NsError('shutting_down', 'the server is shutting down');
    const template = this.host.template(req.template);
    const reservation = this.admission.reserve(template.memoryMiB);
    const id = newId('sbx');
    const now = Date.now();
    this.store.insert({
      id,
      state: 'creating',
      template: template.name,
      snapshotId: null,
      metadata: req.metadata,
      envs: req.envs,
      memoryMiB: template.memoryMiB,
      vcpus: template.vcpus,
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
      requirements: template.requirements,
      updatedAt: now,
    });
    return this.locks.run(id, async () => {
      const t0 = Date.now();
      const cleanup = new CleanupStack();
      cleanup.defer('release admission', reservation.release);
      try {
        const vm = await this.startFromTemplate(id, template, req.allowInternetAccess, cleanup);
        const rec = this.store.get(id)!;
        await this.connectAndInit(rec, vm, 15_000);
        const started = Date.now();
        const running = this.store.transition(id, 'creating', 'running', 'started', { startedAt: started, expiresAt: started + req.timeoutMs });
        cleanup.release();
        this.attach(id, vm, reservation.release);
        this.log.info({ sandboxId: id, template: template.name, ms: Date.now() - t0 }, 'sandbox created');
        return running;
      } catch (err) {
        const errors = await cleanup.run();
        for (const e of errors) this.log.error({ sandboxId: id, err: e.message }, 'cleanup after a failed create');
        const wrapped = wrapError(err, `creating sandbox ${id}`, 'vm_start_failed');
        this.store.transition(id, 'creating', 'failed', wrapped.message, { endedAt: Date.now(), endReason: wrapped.message, errorCode: wrapped.code, pid: null });
        this.log.error({ sandboxId: id, err: wrapped.message }, 'sandbox create failed');
        throw wrapped;
      }
    });
  }

  /** Prepares the sandbox's RAM file and disk from the template and restores the template snapshot. */
  private async startFromTemplate(id: string, template: TemplateInfo, allowInternetAccess: boolean, cleanup: CleanupStack): Promise<Vm> {
    const dir = this.sandboxDir(id);
    fs.mkdirSync(dir, { mode: 0o700 });
    cleanup.defer('remove sandbox files', () => fs.rmSync(dir, { recursive: true, force: true }));
    const spec: VmSpec = {
      id,
      memoryMiB: template.memoryMiB,
      vcpus: template.vcpus,
      kernel: template.image.kernel,
      initrd: template.image.initrd,
      cmdline: template.image.cmdline,
      ramFile: path.join(dir, 'mem'),
      disk: path.join(dir, 'disk.qcow2'),
      runDir: path.join(dir, 'run'),
      consoleLog: false,
      allowInternetAccess,
    };
    await Promise.all([cloneFile(template.memFile, spec.ramFile), createOverlay(template.disk, spec.disk)]);
    if (this.host.uids) {
      const uid = this.host.uids.allocate(this.uidOwner(id));
      cleanup.defer('release uid', () => this.host.uids?.release(uid, this.uidOwner(id)));
      spec.runAsUid = uid;
      fs.mkdirSync(spec.runDir, { mode: 0o700 });
      chownTree(dir, uid);
    }
    const vm = await Vm.launch(this.host.profile, spec, true);
    cleanup.defer('kill vm', () => vm.kill());
    this.store.patch(id, { pid: vm.pid, vmSpec: spec });
    await vm.restoreState(template.stateFile);
    return vm;
  }

  /** Connects to the agent and applies the sandbox's identity, clock, entropy and environment. */
  private async connectAndInit(rec: SandboxRecord, vm: Vm, timeoutMs: number): Promise<AgentClient> {
    const agent = await vm.connectAgent(timeoutMs);
    await agent.call('sys.init', {
      timeMs: Date.now(),
      entropy: randomBytes(64).toString('base64'),
      hostname: rec.id,
      machineId: rec.identity.machineId,
      bootId: rec.identity.bootId,
      envs: rec.envs,
    });
    return agent;
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
        this.store.transition(id, rec.state, 'failed', reason, { endedAt: Date.now(), endReason: reason, errorCode: 'vm_exited', pid: null });
        this.log.warn({ sandboxId: id, detail: exit.detail }, 'sandbox VM died');
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
      const done = this.store.transition(id, 'killing', 'killed', reason, { endedAt: Date.now(), endReason: reason, pid: null });
      this.log.info({ sandboxId: id, reason }, 'sandbox killed');
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
