// The console's only way to the server: the public HTTP API (/v1), with the API key the user
// entered, kept in sessionStorage (this tab, until it closes) and sent as `Authorization: Bearer`
// on every request: never in a URL. The event stream and terminals are read with fetch (streamed
// bodies), so they carry the header too (EventSource cannot set one).

const KEY = 'nullspace.apiKey';

export const session = {
  key: (): string | null => sessionStorage.getItem(KEY),
  set: (k: string) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An error answer of the API: its code and message, shown as they are. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** Called when the server says the key is wrong (401 unauthorized): back to the sign-in. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

export async function raw(method: string, path: string, init: { body?: BodyInit; json?: unknown; signal?: AbortSignal; headers?: Record<string, string>; key?: string } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  const key = init.key ?? session.key();
  if (key) headers.authorization = `Bearer ${key}`;
  let body = init.body;
  if (init.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.json);
  }
  const res = await fetch(`/v1${path}`, { method, headers, body, signal: init.signal, cache: 'no-store' });
  if (!res.ok) {
    let code = 'http_' + res.status;
    let message = res.statusText;
    try {
      const e = (await res.json()) as { error?: { code: string; message: string } };
      if (e.error) ({ code, message } = e.error);
    } catch {
      /* not JSON */
    }
    if (res.status === 401 && code === 'unauthorized' && init.key === undefined) onUnauthorized();
    throw new ApiError(res.status, code, message);
  }
  return res;
}

export async function api<T>(method: string, path: string, json?: unknown): Promise<T> {
  const res = await raw(method, path, json === undefined ? {} : { json });
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}
export const get = <T>(path: string) => api<T>('GET', path);

/** Every page of a list route (`{items, nextToken}`). */
export async function all<T>(path: string, field: string): Promise<T[]> {
  const out: T[] = [];
  let token: string | null = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page: Record<string, unknown> = await get(`${path}${sep}limit=1000${token ? `&nextToken=${encodeURIComponent(token)}` : ''}`);
    out.push(...(page[field] as T[]));
    token = (page.nextToken as string | null) ?? null;
  } while (token);
  return out;
}

/** The lines of a streamed body (NDJSON, SSE), as they arrive. */
export async function* lines(res: Response): AsyncGenerator<string> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        yield buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
      }
    }
    if (buf) yield buf;
  } finally {
    reader.releaseLock();
  }
}

export async function* ndjson<T>(res: Response): AsyncGenerator<T> {
  for await (const line of lines(res)) if (line.trim()) yield JSON.parse(line) as T;
}

export interface LifecycleEvent {
  id: number;
  type: string;
  sandboxId: string;
  at: string;
  data: Record<string, unknown>;
}

/**
 * Follows GET /v1/events (Server-Sent Events read with fetch, the key in the header) until `signal`
 * aborts; reconnects after a failure from the last id seen (Last-Event-ID), as EventSource would.
 */
export async function followEvents(query: string, onEvent: (e: LifecycleEvent) => void, onState: (connected: boolean) => void, signal: AbortSignal): Promise<void> {
  let last: string | undefined;
  while (!signal.aborted) {
    try {
      const res = await raw('GET', `/events${query}`, { signal, headers: last ? { 'last-event-id': last } : {} });
      onState(true);
      let data = '';
      for await (const line of lines(res)) {
        if (line.startsWith('data:')) data += line.slice(5).trimStart();
        else if (line.startsWith('id:')) last = line.slice(3).trim();
        else if (line === '' && data) {
          onEvent(JSON.parse(data) as LifecycleEvent);
          data = '';
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return;
    }
    onState(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

export interface Sandbox {
  sandboxId: string;
  template: string;
  snapshotId: string | null;
  forkedFrom: string | null;
  state: string;
  metadata: Record<string, string>;
  memoryMiB: number;
  vcpus: number;
  timeoutMs: number;
  createdAt: string;
  startedAt: string | null;
  expiresAt: string | null;
  endedAt: string | null;
  endReason: string | null;
  errorCode: string | null;
  hostId: string;
  network: { allowPublicTraffic: boolean; trafficAccessToken: string; previewDomain: string; previewScheme: string };
  volumes: Record<string, string>;
  pausedAt: string | null;
  remainingTimeoutMs: number | null;
}

export interface Host {
  hostId: string;
  state: 'ready' | 'draining' | 'lost';
  url: string | null;
  fingerprint: { qemuVersion: string; machine: string; accel: string; cpuModel: string; hostCpu: string; deviceSet: string; hostKernel: string };
  capacity: { memoryMiB: number; availableMemoryMiB: number; vcpus: number; diskMiB: number; freeDiskMiB: number };
  counts: { sandboxes: number };
  epoch: number;
  joinedAt: string;
  lastHeartbeat: string;
  lostAt: string | null;
  fencedAt: string | null;
}

export interface Snapshot {
  snapshotId: string;
  sandboxId: string;
  kind: 'reusable' | 'hibernate' | 'fork';
  template: string;
  metadata: Record<string, string>;
  createdAt: string;
  pauseMs: number;
  sizeBytes: number;
  volumes: Record<string, string>;
}

export interface Template {
  name: string;
  version: number;
  ref: string;
  cpuCount: number;
  memoryMiB: number;
  diskSizeMiB: number;
  createdAt: string;
  from: string;
  startCmd: string | null;
  exposedPorts: number[];
  buildMs: number | null;
  steps: number;
  compatible: boolean;
}

export interface Volume {
  name: string;
  volumeId: string;
  createdAt: string;
  sizeBytes: number;
  mountedBy: string[];
}

export interface Sample {
  timestamp: string;
  cpuUsedPct: number;
  cpuCount: number;
  memUsedBytes: number;
  memTotalBytes: number;
  hostMemBytes: number;
  diskUsedBytes: number;
  diskTotalBytes: number;
}

export interface GcReport {
  dryRun: boolean;
  freed: Array<{ layerId: string; kind: string; bytes: number }>;
  freedBytes: number;
  orphanFiles: string[];
  retained: Array<{ layerId: string; kind: string; bytes: number; heldBy: string[] }>;
  retainedBytes: number;
}

export const LIVE = ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing'];
export const ALL_STATES = [...LIVE, 'killed', 'failed'];

export const b64 = {
  encode(bytes: Uint8Array): string {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  },
  decode(s: string): Uint8Array {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  },
};

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}
