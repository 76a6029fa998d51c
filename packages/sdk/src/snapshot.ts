import { ApiClient, ConnectionConfig, type ConnectionOpts } from './connection.js';
import { falseOn, Paginator } from './paginator.js';

export type SnapshotKind = 'reusable' | 'hibernate' | 'fork';

interface RawSnapshot {
  snapshotId: string;
  sandboxId: string;
  kind: SnapshotKind;
  template: string;
  metadata: Record<string, string>;
  createdAt: string;
  pauseMs: number | null;
  sizeBytes: number;
  volumes: Record<string, string>;
}

export interface SnapshotListOpts extends ConnectionOpts {
  sandboxId?: string;
  /** Default: reusable and hibernate snapshots. */
  kind?: SnapshotKind | SnapshotKind[];
  metadata?: Record<string, string>;
  /** Page size (1-1000, default 100). */
  limit?: number;
  nextToken?: string;
}

export interface Compatibility {
  compatible: boolean;
  /** Requirements of the snapshot that this host does not meet. */
  mismatches: Array<{ field: string; snapshot: string | number; host: string | number }>;
  requirements: Record<string, string | number>;
  /** Each runtime host of the server (`GET /v1/hosts`) compared by its fingerprint. */
  hosts: Array<{ hostId: string; state: string; compatible: boolean; mismatches: Array<{ field: string; snapshot: string | number; host: string | number }> }>;
}

/**
 * A snapshot: a sandbox's memory and root disk captured at one instant. Reusable snapshots start
 * any number of new sandboxes: `Sandbox.create({ snapshotId: snapshot.id })`.
 */
export class Snapshot {
  readonly id: string;
  readonly sandboxId: string;
  readonly kind: SnapshotKind;
  readonly template: string;
  readonly metadata: Record<string, string>;
  readonly createdAt: Date;
  /** How long the source sandbox was paused for the capture. */
  readonly pauseMs: number | null;
  readonly sizeBytes: number;
  /** Volumes it expects (not copied into it): guest path -> volume name. */
  readonly volumes: Record<string, string>;

  /** @internal */
  constructor(raw: RawSnapshot, private readonly api: ApiClient) {
    this.id = raw.snapshotId;
    this.sandboxId = raw.sandboxId;
    this.kind = raw.kind;
    this.template = raw.template;
    this.metadata = raw.metadata;
    this.createdAt = new Date(raw.createdAt);
    this.pauseMs = raw.pauseMs;
    this.sizeBytes = raw.sizeBytes;
    this.volumes = raw.volumes ?? {};
  }

  static async get(snapshotId: string, opts: ConnectionOpts = {}): Promise<Snapshot> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return new Snapshot(await api.json<RawSnapshot>(`/v1/snapshots/${encodeURIComponent(snapshotId)}`), api);
  }

  static list(opts: SnapshotListOpts = {}): SnapshotPaginator {
    return new SnapshotPaginator(new ApiClient(new ConnectionConfig(opts)), opts);
  }

  /** Deletes a snapshot. Sandboxes started from it keep running; its storage is freed when unused. */
  static async delete(snapshotId: string, opts: ConnectionOpts = {}): Promise<boolean> {
    return deleteSnapshot(new ApiClient(new ConnectionConfig(opts)), snapshotId);
  }

  /** Whether this server's host can restore the snapshot, and why not. */
  static async compatibility(snapshotId: string, opts: ConnectionOpts = {}): Promise<Compatibility> {
    return compatibilityOf(new ApiClient(new ConnectionConfig(opts)), snapshotId);
  }

  delete(): Promise<boolean> {
    return deleteSnapshot(this.api, this.id);
  }

  /** Whether this server's host can restore the snapshot, and why not. */
  compatibility(): Promise<Compatibility> {
    return compatibilityOf(this.api, this.id);
  }

  /** Its public fields (what `JSON.stringify` prints: never the client it came with). */
  toJSON(): Record<string, unknown> {
    const { id, sandboxId, kind, template, metadata, createdAt, pauseMs, sizeBytes, volumes } = this;
    return { id, sandboxId, kind, template, metadata, createdAt, pauseMs, sizeBytes, volumes };
  }

  /** @internal */
  static fromRaw(raw: unknown, api: ApiClient): Snapshot {
    return new Snapshot(raw as RawSnapshot, api);
  }
}

function deleteSnapshot(api: ApiClient, snapshotId: string): Promise<boolean> {
  return falseOn('snapshot_not_found', () => api.json(`/v1/snapshots/${encodeURIComponent(snapshotId)}`, { method: 'DELETE' }));
}

function compatibilityOf(api: ApiClient, snapshotId: string): Promise<Compatibility> {
  return api.json<Compatibility>(`/v1/snapshots/${encodeURIComponent(snapshotId)}/compatibility`);
}

/** Pages of snapshots (see `Paginator`). */
export class SnapshotPaginator extends Paginator<Snapshot> {
  constructor(api: ApiClient, opts: SnapshotListOpts) {
    super(async (token) => {
      const kinds = opts.kind === undefined ? undefined : Array.isArray(opts.kind) ? opts.kind : [opts.kind];
      const r = await api.json<{ snapshots: RawSnapshot[]; nextToken: string | null }>('/v1/snapshots', {
        query: {
          sandboxId: opts.sandboxId,
          kind: kinds?.join(','),
          metadata: Object.entries(opts.metadata ?? {}).map(([k, v]) => `${k}=${v}`),
          limit: opts.limit,
          nextToken: token,
        },
      });
      return { items: r.snapshots.map((x) => new Snapshot(x, api)), nextToken: r.nextToken ?? undefined };
    }, opts.nextToken);
  }
}
