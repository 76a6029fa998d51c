import fs from 'node:fs';
import type { AgentClient } from './agent/client.js';
import type { CleanupStack } from './cleanup.js';
import { processVmId, type VmSpec, type VolumeDevice } from './qemu.js';
import type { HostProfile } from './host.js';
import { chownTree, type UidAllocator } from './isolation.js';
import { SANDBOX_ID_RE, type DataDirLayout } from './layout.js';
import type { CaptureResult, CaptureTargets } from './snapshot.js';
import { cloneFile, createOverlay } from './storage.js';
import { Vm, type VmExit } from './vm.js';

/**
 * THE SEAM between the sandbox lifecycle (the control plane: packages/server/src/sandbox) and what
 * runs VMs on a host. Everything that starts, adopts or talks to a VM goes through `VmHost` and the
 * `VmHandle`s it returns: the lifecycle never touches QEMU, QMP, the agent socket, the sandbox's host
 * files or uids itself. `LocalVmHost` is this machine's implementation; tests drive the lifecycle
 * with a fake one (packages/server/test/fakes.ts), and a host reached over the network can be another.
 */
export interface VmHost {
  readonly profile: HostProfile;
  /**
   * A new VM of sandbox `id`: its directory, RAM (a reflink copy of `memFile`), overlay on
   * `diskBacking` and uid, then QEMU started waiting for its device state. Each acquisition is
   * registered on `cleanup` as it happens (a failure half-way leaves nothing once it runs).
   */
  launch(req: LaunchRequest, cleanup: CleanupStack, phases?: Record<string, number>): Promise<VmHandle>;
  /** Re-attaches to the QEMU of `spec` a previous server started (undefined: gone, or not that VM). */
  adopt(spec: VmSpec, pid: number): Promise<VmHandle | undefined>;
  /** QEMU processes of this data dir's sandboxes (by the RAM file on their command line). */
  processes(): Array<{ pid: number; sandboxId: string }>;
  /** Kills a process found by `processes` (SIGKILL; gone already is fine). */
  killProcess(pid: number): void;
  /** Removes sandbox `id`'s host files (idempotent). */
  removeFiles(id: string): void;
  /** Takes back the uid claim of a re-adopted VM (false: another owner holds it). */
  claimUid(id: string, spec: VmSpec): boolean;
  releaseUid(id: string, spec: VmSpec | null | undefined): void;
  /** Frees this data dir's uid claims that `keep` does not list (after recovery at start). */
  sweepUids(keep: Set<number>): void;
}

export interface LaunchRequest {
  id: string;
  /** The RAM image to clone (its device state is loaded next); null: a cold boot from `diskBacking`, with fresh RAM. */
  memFile: string | null;
  diskBacking: string;
  memoryMiB: number;
  vcpus: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  diskSizeBytes: number;
  allowInternetAccess: boolean;
  /** Volume devices, their host paths resolved by the control plane (null: deleted, an empty placeholder is exported). */
  volumes: Array<Omit<VolumeDevice, 'hostPath'> & { hostPath: string | null }>;
  /** Prepared ahead of demand: QEMU runs at a low priority until `setNice(0)`. */
  nice?: number | undefined;
  /** Keep the guest console in the VM's run dir (template builds: what a failed boot printed). */
  consoleLog?: boolean | undefined;
}

/** What the lifecycle may ask of one running VM. */
export interface VmHandle {
  readonly pid: number;
  readonly spec: VmSpec;
  readonly gone: boolean;
  /** Resolves once, when the VM is gone ('quit': we stopped it; 'died': it went away by itself). */
  readonly exited: Promise<VmExit>;
  /** The connected agent session, if any. */
  readonly agent: GuestAgent | undefined;
  /** Loads device state (its RAM is the mapped file) and starts the vCPUs. */
  restoreState(stateFile: string): Promise<void>;
  plugVolume(device: VolumeDevice): Promise<void>;
  connectAgent(timeoutMs: number): Promise<GuestAgent>;
  disconnectAgent(): void;
  /** Drops the control connections; the VM runs on (a restarted server re-adopts it). */
  detach(): void;
  kill(): Promise<VmExit>;
  /** QEMU's run state ('running', 'paused', 'io-error', ...). */
  status(): Promise<string>;
  isRunning(): Promise<boolean>;
  cont(): Promise<void>;
  /** Calls `fn` whenever QEMU stops the VM on a guest write error (a full host disk: werror=enospc). */
  onStoppedOnIoError(fn: () => void): void;
  /** The file and block node the root disk is written to now, and its backing file. */
  activeDisk(): Promise<{ file: string; node: string; backingFile: string | undefined }>;
  /** Memory and disk at one paused instant (see runtime/src/snapshot.ts). */
  capture(to: CaptureTargets, opts: CaptureOptions): Promise<CaptureResult>;
  /** Streams the disk chain above `base` into the active overlay; `cancelStream` stops it. */
  streamDisk(base: string): Promise<void>;
  cancelStream(): Promise<void>;
  setNice(nice: number): void;
}

export type { CaptureOptions } from './snapshot.js';
import type { CaptureOptions } from './snapshot.js';

/** A guest agent session as the control plane uses it (the AgentClient, or a fake). */
export type GuestAgent = Pick<AgentClient, 'call' | 'open' | 'isClosed' | 'close'>;

/** This machine: QEMU processes under per-sandbox uids, files in a data dir (see DataDirLayout). */
export class LocalVmHost implements VmHost {
  constructor(
    readonly profile: HostProfile,
    private readonly layout: DataDirLayout,
    /** undefined when VMs run as root (only without network isolation). */
    private readonly uids: UidAllocator | undefined,
    /** Group of shared-volume directories: the QEMU of a sandbox that mounts volumes runs in it. */
    private readonly volumeGid: number,
  ) {}

  async launch(req: LaunchRequest, cleanup: CleanupStack, phases: Record<string, number> = {}): Promise<VmHandle> {
    const t0 = Date.now();
    const files = this.layout.sandboxFiles(req.id);
    fs.mkdirSync(files.dir, { mode: 0o700 });
    cleanup.defer('remove sandbox files', () => fs.rmSync(files.dir, { recursive: true, force: true }));
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
      consoleLog: req.consoleLog === true,
      allowInternetAccess: req.allowInternetAccess,
    };
    if (req.volumes.length) {
      spec.volumes = req.volumes.map((v) => {
        if (v.hostPath !== null) return { ...v, hostPath: v.hostPath };
        const placeholder = this.layout.volumePlaceholder(req.id, v.tag);
        fs.mkdirSync(placeholder, { recursive: true, mode: 0o700 });
        return { ...v, hostPath: placeholder };
      });
    }
    const ram = req.memFile === null ? freshRam(spec.ramFile, req.memoryMiB) : cloneFile(req.memFile, spec.ramFile);
    await Promise.all([ram, createOverlay(req.diskBacking, spec.disk)]);
    if (this.uids) {
      const owner = this.layout.uidOwner(req.id);
      const uid = this.uids.allocate(owner);
      cleanup.defer('release uid', () => this.uids?.release(uid, owner));
      spec.runAsUid = uid;
      // the shared-volumes group reaches the volume directories (2770 root:group)
      if (req.volumes.length) spec.runAsGid = this.volumeGid;
      fs.mkdirSync(spec.runDir, { mode: 0o700 });
      chownTree(files.dir, uid);
    }
    phases.prepareMs = Date.now() - t0;
    const vm = await Vm.launch(this.profile, spec, req.memFile !== null, { nice: req.nice ?? 0 });
    cleanup.defer('kill vm', () => vm.kill());
    return vm;
  }

  adopt(spec: VmSpec, pid: number): Promise<VmHandle | undefined> {
    return Vm.adopt(this.profile, spec, pid);
  }

  processes(): Array<{ pid: number; sandboxId: string }> {
    const out: Array<{ pid: number; sandboxId: string }> = [];
    for (const p of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(p)) continue;
      const pid = Number(p);
      const id = processVmId(pid);
      if (!id || !SANDBOX_ID_RE.test(id)) continue;
      let cmdline = '';
      try {
        cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      // exactly this data dir's sandbox of that id (not a data dir whose path merely contains ours)
      if (cmdline.split('\0').some((a) => a.includes(this.layout.qemuMarker(id)))) out.push({ pid, sandboxId: id });
    }
    return out;
  }

  killProcess(pid: number): void {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }

  removeFiles(id: string): void {
    fs.rmSync(this.layout.sandboxDir(id), { recursive: true, force: true });
  }

  claimUid(id: string, spec: VmSpec): boolean {
    return spec.runAsUid === undefined || this.uids === undefined || this.uids.claim(spec.runAsUid, this.layout.uidOwner(id));
  }

  releaseUid(id: string, spec: VmSpec | null | undefined): void {
    if (spec?.runAsUid !== undefined) this.uids?.release(spec.runAsUid, this.layout.uidOwner(id));
  }

  sweepUids(keep: Set<number>): void {
    this.uids?.sweep(this.layout.uidOwnerPrefix, keep);
  }
}

/** A sparse RAM file of `memoryMiB` for a VM that boots (its pages are allocated as the guest touches them). */
async function freshRam(file: string, memoryMiB: number): Promise<void> {
  fs.closeSync(fs.openSync(file, 'wx', 0o600));
  fs.truncateSync(file, memoryMiB * 1024 * 1024);
}
