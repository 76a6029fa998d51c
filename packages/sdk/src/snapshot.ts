import { ApiClient, ConnectionConfig, type ConnectionOpts } from './connection.js';

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
    const api = new ApiClient(new ConnectionConfig(opts));
    try {
      await api.json(`/v1/snapshots/${encodeURIComponent(snapshotId)}`, { method: 'DELETE' });
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'snapshot_not_found') return false;
      throw err;
    }
  }

  /** Whether this server's host can restore the snapshot, and why not. */
  static async compatibility(snapshotId: string, opts: ConnectionOpts = {}): Promise<Compatibility> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return api.json<Compatibility>(`/v1/snapshots/${encodeURIComponent(snapshotId)}/compatibility`);
  }

  delete(): Promise<boolean> {
    return Snapshot.delete(this.id, { apiUrl: this.api.config.apiUrl, apiKey: this.api.config.apiKey });
  }

  /** @internal */
  static fromRaw(raw: unknown, api: ApiClient): Snapshot {
    return new Snapshot(raw as RawSnapshot, api);
  }
}

/** Pages of snapshots; iterate with `for await` for every item. */
export class SnapshotPaginator implements AsyncIterable<Snapshot> {
  private token: string | undefined;
  private started = false;

  constructor(private readonly api: ApiClient, private readonly opts: SnapshotListOpts) {
    this.token = opts.nextToken;
  }

  get hasNext(): boolean {
    return !this.started || this.token !== undefined;
  }

  get nextToken(): string | undefined {
    return this.token;
  }

  async nextItems(): Promise<Snapshot[]> {
    if (!this.hasNext) return [];
    this.started = true;
    const kinds = this.opts.kind === undefined ? undefined : Array.isArray(this.opts.kind) ? this.opts.kind : [this.opts.kind];
    const r = await this.api.json<{ snapshots: RawSnapshot[]; nextToken: string | null }>('/v1/snapshots', {
      query: {
        sandboxId: this.opts.sandboxId,
        kind: kinds?.join(','),
        metadata: Object.entries(this.opts.metadata ?? {}).map(([k, v]) => `${k}=${v}`),
        limit: this.opts.limit,
        nextToken: this.token,
      },
    });
    this.token = r.nextToken ?? undefined;
    return r.snapshots.map((s) => new Snapshot(s, this.api));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Snapshot> {
    while (this.hasNext) {
      for (const item of await this.nextItems()) yield item;
    }
  }
}
