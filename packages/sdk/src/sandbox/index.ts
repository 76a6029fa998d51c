import { createHmac } from 'node:crypto';
import { ApiClient, ConnectionConfig, type ConnectionOpts } from '../connection.js';
import { InvalidArgumentError } from '../errors.js';
import { streamEvents, type EventStreamOpts, type SandboxEvent } from '../events.js';
import { falseOn, Paginator } from '../paginator.js';
import { Snapshot } from '../snapshot.js';
import { Commands } from './commands.js';
import { Filesystem } from './filesystem.js';
import { Pty } from './pty.js';

/** A sandbox's state; `lost`: it ran on a fleet host that stopped heartbeating (unknown until the host is back). */
export type SandboxState = 'creating' | 'running' | 'hibernating' | 'paused' | 'resuming' | 'killing' | 'killed' | 'failed' | 'lost';

export interface SandboxInfo {
  sandboxId: string;
  template: string;
  snapshotId: string | null;
  /** The sandbox it was forked from. */
  forkedFrom: string | null;
  state: SandboxState;
  metadata: Record<string, string>;
  memoryMiB: number;
  vcpus: number;
  allowInternetAccess: boolean;
  timeoutMs: number;
  createdAt: Date;
  startedAt: Date | null;
  /** When a running sandbox times out. */
  expiresAt: Date | null;
  endedAt: Date | null;
  endReason: string | null;
  errorCode: string | null;
  lifecycle: { onTimeout: 'kill' | 'hibernate'; autoResume: boolean };
  network: SandboxNetwork;
  /** Mounted volumes: guest path -> volume name. */
  volumes: Record<string, string>;
  /** When it was hibernated (paused sandboxes). */
  pausedAt: Date | null;
  /** While paused: the timeout it resumes with. */
  remainingTimeoutMs: number | null;
  /** The runtime host it runs on ("local": the server's own). */
  hostId: string;
}

/** How the sandbox's ports are reached from outside: its preview URLs (`getHost`, `getSignedUrl`). */
export interface SandboxNetwork {
  /** Its preview URLs answer without the traffic token. */
  allowPublicTraffic: boolean;
  /** The secret of its preview URLs (header `X-Nullspace-Traffic-Token`; signs its signed URLs). */
  trafficAccessToken: string;
  /** Preview URLs are `<port>-<sandboxId>.<previewDomain>`. */
  previewDomain: string;
  previewScheme: 'http' | 'https';
  /** Egress allow rules (empty: every destination not denied). */
  allowOut: string[];
  /** Egress deny rules (a match wins over any allow rule). */
  denyOut: string[];
}

/**
 * Egress rules: IPv4/IPv6 addresses, CIDRs, domain names (`example.com`) and wildcards
 * (`*.example.com`, its subdomains). Names are matched on each connection's TLS SNI or HTTP Host.
 * A deny match wins; a non-empty allow list refuses everything it does not match.
 */
export interface EgressRules {
  allowOut?: string[];
  denyOut?: string[];
}

/** A sandbox's egress rules and the connections they refused over its life. */
export interface NetworkRules {
  allowOut: string[];
  denyOut: string[];
  refusedConnections: number;
}

export interface SandboxOpts extends ConnectionOpts {
  /** Template name; default "base". */
  template?: string;
  /** Start from this reusable snapshot (memory and disk) instead of a template. */
  snapshotId?: string;
  metadata?: Record<string, string>;
  /** Default environment of every command. */
  envs?: Record<string, string>;
  /** The sandbox is killed after this long without `setTimeout`; default 300000. */
  timeoutMs?: number;
  /** false cuts all outbound network traffic; default true. */
  allowInternetAccess?: boolean;
  /**
   * `onTimeout: 'hibernate'`: the timeout hibernates the sandbox instead of killing it; `connect`
   * resumes it. `autoResume: true`: a request to one of its preview URLs resumes it too.
   */
  lifecycle?: { onTimeout?: 'kill' | 'hibernate'; autoResume?: boolean };
  /**
   * `allowPublicTraffic: true`: its preview URLs answer without the traffic token (default false).
   * `allowOut`, `denyOut`: egress rules (see `EgressRules`; from a snapshot: the snapshot's unless given).
   */
  network?: { allowPublicTraffic?: boolean } & EgressRules;
  /** Shared volumes to mount: absolute guest path -> volume name (see `Volume`). */
  volumes?: Record<string, string>;
  /** From a snapshot whose volume was deleted: start without it (an empty placeholder) instead of 409 `volume_missing`. */
  allowMissingVolumes?: boolean;
}

export interface ForkOpts {
  metadata?: Record<string, string>;
  envs?: Record<string, string>;
  timeoutMs?: number;
}

export interface SandboxListOpts extends ConnectionOpts {
  query?: { metadata?: Record<string, string>; state?: SandboxState[] };
  /** Page size (1-1000, default 100). */
  limit?: number;
  nextToken?: string;
}

interface RawInfo extends Omit<SandboxInfo, 'createdAt' | 'startedAt' | 'expiresAt' | 'endedAt' | 'pausedAt'> {
  createdAt: string;
  startedAt: string | null;
  expiresAt: string | null;
  endedAt: string | null;
  pausedAt: string | null;
}

const date = (s: string | null) => (s === null ? null : new Date(s));

/** One metrics sample of a running sandbox (`getMetrics`). */
export interface SandboxMetrics {
  timestamp: Date;
  /** CPU use since the previous sample, % of all its vCPUs (0-100). */
  cpuUsedPct: number;
  cpuCount: number;
  /** Guest view: MemTotal - MemAvailable, and MemTotal. */
  memUsedBytes: number;
  memTotalBytes: number;
  /** Host memory of its VM (QEMU PSS); null when it could not be read. */
  hostMemBytes: number | null;
  /** Bytes its disk overlays hold on the host (what it wrote), and its disk's size. */
  diskUsedBytes: number;
  diskTotalBytes: number;
}

const time = (t: Date | number | string | undefined) => (t === undefined ? undefined : t instanceof Date ? t.toISOString() : String(t));

export function toInfo(r: RawInfo): SandboxInfo {
  return {
    ...r,
    createdAt: new Date(r.createdAt),
    startedAt: date(r.startedAt),
    expiresAt: date(r.expiresAt),
    endedAt: date(r.endedAt),
    pausedAt: date(r.pausedAt),
  };
}

/** Pages of sandboxes (see `Paginator`). */
export class SandboxPaginator extends Paginator<SandboxInfo> {
  constructor(api: ApiClient, opts: SandboxListOpts) {
    super(async (token) => {
      const q = opts.query ?? {};
      const r = await api.json<{ sandboxes: RawInfo[]; nextToken: string | null }>('/v1/sandboxes', {
        query: {
          state: q.state?.join(','),
          metadata: Object.entries(q.metadata ?? {}).map(([k, v]) => `${k}=${v}`),
          limit: opts.limit,
          nextToken: token,
        },
      });
      return { items: r.sandboxes.map(toInfo), nextToken: r.nextToken ?? undefined };
    }, opts.nextToken);
  }
}

/**
 * A nullspace sandbox: a real VM started from a template snapshot.
 *
 * ```ts
 * const sbx = await Sandbox.create({ template: 'base' })
 * await sbx.files.write('/workspace/hello.txt', 'hi')
 * console.log((await sbx.commands.run('cat /workspace/hello.txt')).stdout)
 * await sbx.kill()
 * ```
 */
export class Sandbox {
  readonly files: Filesystem;
  readonly commands: Commands;
  /** Terminals: processes on a pseudo-terminal (the login shell by default). */
  readonly pty: Pty;

  protected constructor(
    readonly sandboxId: string,
    protected readonly api: ApiClient,
    /** From the sandbox's view when this handle was made. */
    protected readonly network?: SandboxNetwork,
  ) {
    this.files = new Filesystem(api, sandboxId);
    this.commands = new Commands(api, sandboxId);
    this.pty = new Pty(api, sandboxId);
  }

  /** Starts a sandbox from a template (default "base"): a copy-on-write restore of its snapshot. */
  static async create(opts?: SandboxOpts): Promise<Sandbox>;
  static async create(template: string, opts?: SandboxOpts): Promise<Sandbox>;
  static async create(templateOrOpts?: string | SandboxOpts, maybeOpts: SandboxOpts = {}): Promise<Sandbox> {
    const opts = typeof templateOrOpts === 'string' ? { ...maybeOpts, template: templateOrOpts } : (templateOrOpts ?? {});
    if (opts.snapshotId !== undefined && opts.template !== undefined) {
      throw new InvalidArgumentError('pass either a template or a snapshotId, not both (a sandbox from a snapshot has its template)', { code: 'bad_request' });
    }
    const api = new ApiClient(new ConnectionConfig(opts));
    const info = await api.json<RawInfo>('/v1/sandboxes', {
      method: 'POST',
      json: {
        template: opts.snapshotId === undefined ? opts.template : undefined,
        snapshotId: opts.snapshotId,
        metadata: opts.metadata,
        envs: opts.envs,
        timeoutMs: opts.timeoutMs,
        allowInternetAccess: opts.allowInternetAccess,
        lifecycle: opts.lifecycle,
        network: opts.network,
        volumes: opts.volumes,
        allowMissingVolumes: opts.allowMissingVolumes,
      },
    });
    return new this(info.sandboxId, api, info.network);
  }

  /** A handle on an existing sandbox: a running one as it is, a paused one resumed from its latest hibernation. */
  static async connect(sandboxId: string, opts: ConnectionOpts = {}): Promise<Sandbox> {
    const api = new ApiClient(new ConnectionConfig(opts));
    const id = encodeURIComponent(sandboxId);
    let info = await api.json<RawInfo>(`/v1/sandboxes/${id}`);
    if (info.state === 'paused') info = await api.json<RawInfo>(`/v1/sandboxes/${id}/resume`, { method: 'POST', json: {} });
    return new this(info.sandboxId, api, info.network);
  }

  /**
   * Resumes the sandbox a hibernation snapshot belongs to (same sandbox id) from it. It must be that
   * sandbox's latest hibernation (409 `snapshot_not_latest`); a reusable snapshot is refused: start
   * a new sandbox from it with `Sandbox.create({ snapshotId })`.
   */
  static async resume(snapshotId: string, opts: ConnectionOpts = {}): Promise<Sandbox> {
    const api = new ApiClient(new ConnectionConfig(opts));
    const info = await api.json<RawInfo>(`/v1/snapshots/${encodeURIComponent(snapshotId)}/resume`, { method: 'POST', json: {} });
    return new this(info.sandboxId, api, info.network);
  }

  static list(opts: SandboxListOpts = {}): SandboxPaginator {
    return new SandboxPaginator(new ApiClient(new ConnectionConfig(opts)), opts);
  }

  static async getInfo(sandboxId: string, opts: ConnectionOpts = {}): Promise<SandboxInfo> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return toInfo(await api.json<RawInfo>(`/v1/sandboxes/${encodeURIComponent(sandboxId)}`));
  }

  /** Kills a sandbox by id. Resolves false when there is no such sandbox. */
  static async kill(sandboxId: string, opts: ConnectionOpts = {}): Promise<boolean> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return falseOn('sandbox_not_found', () => api.json(`/v1/sandboxes/${encodeURIComponent(sandboxId)}`, { method: 'DELETE' }));
  }

  async getInfo(): Promise<SandboxInfo> {
    return toInfo(await this.api.json<RawInfo>(`/v1/sandboxes/${this.sandboxId}`));
  }

  async isRunning(): Promise<boolean> {
    return (await this.getInfo()).state === 'running';
  }

  /** Replaces its egress rules (both lists; an absent one is empty): effective at once for new connections. */
  async updateNetwork(rules: EgressRules): Promise<NetworkRules> {
    return this.api.json<NetworkRules>(`/v1/sandboxes/${this.sandboxId}/network`, { method: 'PUT', json: rules });
  }

  /** Its egress rules and the connections they refused. */
  async getNetwork(): Promise<NetworkRules> {
    return this.api.json<NetworkRules>(`/v1/sandboxes/${this.sandboxId}/network`);
  }

  /** The sandbox is killed `timeoutMs` from now unless this is called again. */
  async setTimeout(timeoutMs: number): Promise<void> {
    await this.api.json(`/v1/sandboxes/${this.sandboxId}/timeout`, { method: 'POST', json: { timeoutMs } });
  }

  /**
   * Captures the sandbox's memory and disk at one instant (it is paused only briefly and keeps
   * running). Start new sandboxes from it with `Sandbox.create({ snapshotId: snapshot.id })`.
   */
  async createSnapshot(opts: { metadata?: Record<string, string> } = {}): Promise<Snapshot> {
    const raw = await this.api.json(`/v1/sandboxes/${this.sandboxId}/snapshots`, { method: 'POST', json: { metadata: opts.metadata } });
    return Snapshot.fromRaw(raw, this.api);
  }

  /**
   * Forks the sandbox: resolves with a new running sandbox whose memory and disk equal this one's
   * at the fork instant (processes included), or with `count` of them (1-32) from that one instant:
   * the source is paused once, however many children. This sandbox is paused only briefly and keeps
   * running, with its id, timeout and state. With `count`, either every child starts or none does
   * (429 `too_many_sandboxes` before the source is even paused when they would not all fit).
   */
  async fork(opts: ForkOpts & { count: number }): Promise<Sandbox[]>;
  async fork(opts?: ForkOpts): Promise<Sandbox>;
  async fork(opts: ForkOpts & { count?: number } = {}): Promise<Sandbox | Sandbox[]> {
    const ctor = this.constructor as typeof Sandbox;
    if (opts.count === undefined) {
      const info = await this.api.json<RawInfo>(`/v1/sandboxes/${this.sandboxId}/fork`, { method: 'POST', json: opts });
      return new ctor(info.sandboxId, this.api, info.network);
    }
    const r = await this.api.json<{ sandboxes: RawInfo[] }>(`/v1/sandboxes/${this.sandboxId}/fork`, { method: 'POST', json: opts });
    return r.sandboxes.map((info) => new ctor(info.sandboxId, this.api, info.network));
  }

  /**
   * The sandbox's metrics samples, oldest first: one every 5 s while it runs (the server's
   * NULLSPACE_METRICS_INTERVAL_MS), the last hour of them, from its second sample on.
   */
  async getMetrics(opts: { start?: Date | number; end?: Date | number } = {}): Promise<SandboxMetrics[]> {
    const r = await this.api.json<{ metrics: Array<Omit<SandboxMetrics, 'timestamp'> & { timestamp: string }> }>(`/v1/sandboxes/${this.sandboxId}/metrics`, {
      query: { start: time(opts.start), end: time(opts.end) },
    });
    return r.metrics.map((m) => ({ ...m, timestamp: new Date(m.timestamp) }));
  }

  /**
   * The server's lifecycle events (every sandbox's, or `sandboxId`'s) as an async iterator: replayed
   * after `lastEventId` when given, then live until `signal` aborts or the loop breaks.
   *
   * ```ts
   * for await (const e of Sandbox.events({ types: ['killed'] })) console.log(e.sandboxId, e.data)
   * ```
   */
  static events(opts: EventStreamOpts = {}): AsyncGenerator<SandboxEvent> {
    return streamEvents(opts);
  }

  /** This sandbox's lifecycle events (see `Sandbox.events`). */
  events(opts: Omit<EventStreamOpts, keyof ConnectionOpts | 'sandboxId'> = {}): AsyncGenerator<SandboxEvent> {
    return streamEvents({ ...opts, sandboxId: this.sandboxId }, this.api);
  }

  /**
   * Hibernates the sandbox: its memory and disk are persisted at one instant and its VM stops (no
   * RAM used). It keeps its id, metadata and remaining timeout; `Sandbox.connect(id)` or
   * `Sandbox.resume(snapshot.id)` brings it back. On a paused sandbox: returns its latest hibernation.
   */
  async hibernate(): Promise<Snapshot> {
    return Snapshot.fromRaw(await this.api.json(`/v1/sandboxes/${this.sandboxId}/hibernate`, { method: 'POST', json: {} }), this.api);
  }

  /** Alias of `hibernate()`. */
  pause(): Promise<Snapshot> {
    return this.hibernate();
  }

  private get net(): SandboxNetwork {
    if (!this.network) throw new InvalidArgumentError('this server does not serve preview URLs (its sandbox view has no network)', { code: 'bad_request' });
    return this.network;
  }

  /**
   * The secret that opens this sandbox's preview URLs: send it as the `X-Nullspace-Traffic-Token`
   * header. Each sandbox has its own (a fork too); it is not the API key.
   */
  get trafficAccessToken(): string {
    return this.net.trafficAccessToken;
  }

  /** The host of a port's preview URL: `<port>-<sandboxId>.<domain>` (`https://` + it when the server says so). */
  getHost(port: number): string {
    return previewHost(this.sandboxId, this.net, port);
  }

  /**
   * A URL of `port` that opens without the header until it expires (default one hour): for a
   * browser, which gets a cookie for the host and the clean URL. Made here from the traffic token
   * (an HMAC), without asking the server.
   */
  getSignedUrl(port: number, opts: { expiresInS?: number; path?: string } = {}): string {
    return signedPreviewUrl(this.sandboxId, this.net, port, opts);
  }

  /** Kills the sandbox (idempotent). */
  async kill(): Promise<void> {
    await this.api.json(`/v1/sandboxes/${this.sandboxId}`, { method: 'DELETE' });
  }
}

/** The host of a sandbox's preview URL of `port` (what `Sandbox.getHost` returns), from its view's `network`. */
export function previewHost(sandboxId: string, network: SandboxNetwork, port: number): string {
  checkPort(port);
  return `${port}-${sandboxId}.${network.previewDomain}`;
}

/** A signed preview URL (what `Sandbox.getSignedUrl` returns), from a sandbox's view's `network`. */
export function signedPreviewUrl(sandboxId: string, network: SandboxNetwork, port: number, opts: { expiresInS?: number; path?: string } = {}): string {
  const host = previewHost(sandboxId, network, port);
  const expiresInS = opts.expiresInS ?? 3600;
  if (!Number.isInteger(expiresInS) || expiresInS < 1) throw new InvalidArgumentError('expiresInS must be a positive integer', { code: 'bad_request' });
  const path = opts.path ?? '/';
  if (!path.startsWith('/')) throw new InvalidArgumentError('path must start with /', { code: 'bad_request' });
  const expires = Math.floor(Date.now() / 1000) + expiresInS;
  const sig = createHmac('sha256', network.trafficAccessToken).update(`${sandboxId}:${port}:${expires}`).digest('base64url');
  return `${network.previewScheme}://${host}${path}${path.includes('?') ? '&' : '?'}ns_token=${sig}&expires=${expires}`;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError(`port must be an integer from 1 to 65535, got ${port}`, { code: 'bad_request' });
}
