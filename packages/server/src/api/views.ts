import type { Static } from '@sinclair/typebox';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { AppDeps } from './deps.js';
import type { Snapshot, SandboxT } from './schemas.js';
import { publicCode } from '../errors.js';
import { LOCAL_HOST_ID } from '../fleet/service.js';

/** How the API shows the records that the manager returns (routes of sandboxes and snapshots). */

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function sandboxView(deps: AppDeps, r: SandboxRecord): SandboxT {
  return {
    sandboxId: r.id,
    template: r.template,
    snapshotId: r.snapshotId,
    forkedFrom: r.forkedFrom,
    state: r.state,
    metadata: r.metadata,
    memoryMiB: r.memoryMiB,
    vcpus: r.vcpus,
    allowInternetAccess: r.allowInternetAccess,
    timeoutMs: r.timeoutMs,
    createdAt: new Date(r.createdAt).toISOString(),
    startedAt: iso(r.startedAt),
    expiresAt: r.state === 'running' ? iso(r.expiresAt) : null,
    endedAt: iso(r.endedAt),
    endReason: r.endReason,
    // the code of the failure as a client would have got it (an internal code is `internal`)
    errorCode: r.errorCode === null ? null : publicCode(r.errorCode),
    lifecycle: { onTimeout: r.onTimeout, autoResume: r.autoResume },
    // (every view is for holders of the API key: the token goes with it)
    network: { allowPublicTraffic: r.allowPublicTraffic, trafficAccessToken: r.trafficToken, previewDomain: deps.preview.publicDomain, previewScheme: deps.preview.scheme, allowOut: r.egress?.allowOut ?? [], denyOut: r.egress?.denyOut ?? [] },
    volumes: Object.fromEntries(r.volumes.map((v) => [v.path, v.name])),
    pausedAt: iso(r.pausedAt),
    remainingTimeoutMs: r.state === 'paused' ? r.remainingMs : null,
    // (placement on joined hosts is not built: every sandbox runs on the control plane's own host)
    hostId: LOCAL_HOST_ID,
  };
}

export async function snapshotView(deps: AppDeps, s: SnapshotRecord): Promise<Static<typeof Snapshot>> {
  return {
    snapshotId: s.id,
    sandboxId: s.sandboxId,
    kind: s.kind,
    template: s.template,
    metadata: s.metadata,
    createdAt: new Date(s.createdAt).toISOString(),
    pauseMs: s.pauseMs,
    sizeBytes: await deps.sandboxes.snapshotBytes(s),
    volumes: Object.fromEntries(s.volumes.map((v) => [v.path, v.name])),
  };
}
