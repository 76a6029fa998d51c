import fs from 'node:fs';
import os from 'node:os';
import { DEVICE_SET, type RestoreRequirements } from '@nullspace/runtime';
import { freeDiskMiB, hostAvailableMiB } from '../admission.js';
import type { HostContext } from '../hostctx.js';

/**
 * What a memory snapshot needs from the host that restores it, as this host offers it: the fields
 * the compatibility check compares (`compareRequirements`: QEMU version, machine type, accelerator,
 * guest-visible CPU model and, for `-cpu host`, the host CPU's model and flags hash, device set),
 * taken from the host profile the server already computed (`HostContext.profile`), plus what is
 * informative for placement: the host kernel, and the templates it holds with the guest kernel and
 * agent versions each was built with (their `template.json` requirements).
 */
export interface HostFingerprint extends Pick<RestoreRequirements, 'qemuVersion' | 'machine' | 'accel' | 'cpuModel' | 'hostCpu' | 'deviceSet'> {
  hostKernel: string;
  templates: Array<{ name: string; version: number; key: string; kernelRelease: string; agentVersion: string; compatible: boolean }>;
}

export interface HostCapacity {
  memoryMiB: number;
  availableMemoryMiB: number;
  vcpus: number;
  diskMiB: number;
  freeDiskMiB: number;
}

/** This host's fingerprint (no probe of its own: the profile and template list of `host`). */
export function hostFingerprint(host: HostContext): HostFingerprint {
  const p = host.profile;
  return {
    qemuVersion: p.qemuVersion,
    machine: p.machine,
    accel: p.accel,
    cpuModel: p.cpuModel,
    hostCpu: p.hostCpu,
    deviceSet: DEVICE_SET,
    hostKernel: os.release(),
    templates: host.templates().map((t) => ({
      name: t.name,
      version: t.version ?? 1,
      key: t.key,
      kernelRelease: t.requirements.kernelRelease,
      agentVersion: t.requirements.agentVersion,
      compatible: t.compatible,
    })),
  };
}

/** Memory, vCPUs and the data dir's disk (what placement will weigh). */
export function hostCapacity(dataDir: string): HostCapacity {
  const st = fs.statfsSync(dataDir);
  return {
    memoryMiB: Math.floor(os.totalmem() / 1024 / 1024),
    availableMemoryMiB: Math.min(hostAvailableMiB(), Math.floor(os.totalmem() / 1024 / 1024)),
    vcpus: os.availableParallelism(),
    diskMiB: Math.floor((st.blocks * st.bsize) / 1024 / 1024),
    freeDiskMiB: freeDiskMiB(dataDir),
  };
}
