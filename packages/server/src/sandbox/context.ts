import type { DataDirLayout, EgressHost, HostProfile, TemplateInfo, UidAllocator, VmHost } from '@nullspace/runtime';
import type { Admission } from '../admission.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { SandboxRecord, SandboxStore } from '../store/sandboxes.js';
import type { SnapshotStore } from '../store/snapshots.js';
import type { KeyedGate, KeyedMutex, RwLock } from '../util.js';
import type { VolumeService } from '../volumes.js';
import type { EgressRulesService } from './egress.js';
import type { Faults } from './faults.js';
import type { LiveSet } from './live.js';
import type { Lifecycle } from './transition.js';

/** What the lifecycle needs to know of this host (HostContext; a fake in unit tests). */
export interface HostInfo {
  readonly profile: HostProfile;
  /** The template registered as `name`, checked against this host (404/409 otherwise). */
  template(name: string): TemplateInfo;
  /** Sandbox uids (undefined: VMs run as the server's user, without network isolation). */
  readonly uids?: UidAllocator | undefined;
  /** The egress rules' firewall and proxy (undefined without network isolation). */
  readonly egress?: EgressHost | undefined;
}

/**
 * What the parts of the sandbox manager share: configuration, stores, the VM host (the seam to what
 * runs VMs), locks, the live sandboxes and the lifecycle. Built once by the manager (manager.ts).
 */
export interface SandboxContext {
  readonly config: Config;
  readonly layout: DataDirLayout;
  readonly store: SandboxStore;
  readonly snapshots: SnapshotStore;
  readonly volumes: VolumeService;
  /** Templates and the host profile (what snapshots are checked against). */
  readonly host: HostInfo;
  readonly vms: VmHost;
  readonly log: Logger;
  readonly admission: Admission;
  /** One lifecycle operation at a time per sandbox. */
  readonly locks: KeyedMutex;
  /** Closed while a sandbox is captured (see guest.ts `agentFor`). */
  readonly gate: KeyedGate;
  /** Captures and restores read the layer store; the garbage collector writes it. */
  readonly layersLock: RwLock;
  readonly live: LiveSet;
  readonly lifecycle: Lifecycle;
  readonly faults: Faults;
  /** The egress rules of running sandboxes. */
  readonly egress: EgressRulesService;
  /** The record of sandbox `id` (404 `sandbox_not_found` for an unknown or malformed id). */
  record(id: string): Promise<SandboxRecord>;
  /** Tells the collector that layers may have lost their last reference. */
  layersReleased(): void;
  /** close() began: no new work, background loops stop. */
  readonly closing: boolean;
  /** close() is done: nothing is attached any more. */
  readonly closed: boolean;
}
