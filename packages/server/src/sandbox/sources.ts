import fs from 'node:fs';
import { compareRequirements, NsError, SNAPSHOT_ID_RE, type RequirementMismatch, type RestoreRequirements, type TemplateInfo } from '@nullspace/runtime';
import { notFound } from '../errors.js';
import type { SnapshotKind, SnapshotRecord, VmConfig } from '../store/snapshots.js';
import type { VolumeAttachment } from '../store/volumes.js';
import type { Chains } from './chains.js';
import type { SandboxContext } from './context.js';

/** What a new sandbox is restored from: a template snapshot or a snapshot of a sandbox. */
export interface RestoreSource {
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

/** Resolves what sandboxes are restored from, checked against this host. */
export class Sources {
  constructor(
    private readonly ctx: SandboxContext,
    private readonly chains: Chains,
  ) {}

  async getSnapshot(id: string): Promise<SnapshotRecord> {
    const snap = SNAPSHOT_ID_RE.test(id) ? await this.ctx.snapshots.get(id) : undefined;
    if (!snap) throw notFound('snapshot', id);
    return snap;
  }

  /** Whether this host can restore `snap`, and if not which requirements differ. */
  compatibility(snap: SnapshotRecord): { compatible: boolean; mismatches: RequirementMismatch[] } {
    const mismatches = compareRequirements(snap.requirements, { ...this.ctx.host.profile, memoryMiB: snap.vmConfig.memoryMiB, vcpus: snap.vmConfig.vcpus });
    for (const f of [snap.vmConfig.kernel, snap.vmConfig.initrd]) {
      if (!fs.existsSync(f)) mismatches.push({ field: 'kernelRelease', snapshot: f, host: 'missing' });
    }
    return { compatible: mismatches.length === 0, mismatches };
  }

  /** A template's snapshot as a source (with the volumes a create asked for). */
  async template(t: TemplateInfo, volumes: Record<string, string>): Promise<RestoreSource> {
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
        diskSizeBytes: (t.diskSizeMiB ?? t.image.diskSizeMiB) * 1024 * 1024,
        allowInternetAccess: true,
      },
      requirements: t.requirements,
      // a built template's ENV: the default environment of its sandboxes (a create's envs override it)
      envs: t.defaults?.envs ?? {},
      volumes: await this.ctx.volumes.attachments(volumes),
      volumesInState: false,
    };
  }

  /** Where a new sandbox comes from: the template's snapshot, or a snapshot (checked against this host). */
  async resolve(req: { template: string; snapshotId?: string | undefined; volumes?: Record<string, string> | undefined }): Promise<RestoreSource> {
    if (req.snapshotId === undefined) return this.template(this.ctx.host.template(req.template), req.volumes ?? {});
    const snap = await this.getSnapshot(req.snapshotId);
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
    await this.chains.boundSnapshotChain(snap);
    if (req.volumes !== undefined && !sameVolumes(req.volumes, snap.volumes)) {
      throw new NsError('bad_request', `a sandbox started from snapshot ${snap.id} mounts the snapshot's volumes (${describeVolumes(snap.volumes)}); leave volumes out`, {
        details: { field: 'volumes' },
      });
    }
    return this.snapshot(snap);
  }

  /** A snapshot's layers as what a sandbox is restored from (the caller holds the layer lock). */
  async snapshot(snap: SnapshotRecord): Promise<RestoreSource> {
    const layer = async (id: string) => {
      const l = await this.ctx.snapshots.layer(id);
      if (!l || !fs.existsSync(l.path)) throw new NsError('internal', `snapshot ${snap.id}: layer ${id} is missing`);
      return l;
    };
    return {
      template: snap.template,
      snapshotId: snap.id,
      snapshotKind: snap.kind,
      memFile: (await layer(snap.memLayer)).path,
      stateFile: (await layer(snap.stateLayer)).path,
      diskBacking: (await layer(snap.diskLayer)).path,
      diskParentLayer: snap.diskLayer,
      vm: snap.vmConfig,
      requirements: snap.requirements,
      envs: snap.envs,
      volumes: snap.volumes,
      volumesInState: true,
    };
  }
}

function sameVolumes(requested: Record<string, string>, attached: VolumeAttachment[]): boolean {
  const r = Object.entries(requested);
  return r.length === attached.length && r.every(([p, name]) => attached.some((a) => a.path === p && a.name === name));
}

function describeVolumes(attached: VolumeAttachment[]): string {
  return attached.length ? attached.map((a) => `${a.name} at ${a.path}`).join(', ') : 'none';
}
