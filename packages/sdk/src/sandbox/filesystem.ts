import { ndjson, type ApiClient } from '../connection.js';
import { SandboxError, errorFromResponse } from '../errors.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface EntryInfo {
  name: string;
  path: string;
  type: EntryType;
  size: number;
  /** Permission bits. */
  mode: number;
  modifiedTime: Date;
  symlinkTarget?: string;
}

export interface WriteInfo {
  path: string;
  size: number;
}

export type FileData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>;

interface RawEntry {
  name: string;
  path: string;
  type: EntryType;
  size: number;
  mode: number;
  mtimeMs: number;
  symlinkTarget?: string;
}

function entry(r: RawEntry): EntryInfo {
  return {
    name: r.name,
    path: r.path,
    type: r.type,
    size: r.size,
    mode: r.mode,
    modifiedTime: new Date(r.mtimeMs),
    ...(r.symlinkTarget !== undefined ? { symlinkTarget: r.symlinkTarget } : {}),
  };
}

/** A change in a watched directory. `name` is relative to it; `overflow` says events were dropped. */
export interface FilesystemEvent {
  type: 'create' | 'write' | 'remove' | 'rename' | 'chmod' | 'overflow';
  name: string;
  /** For overflow: how many events were dropped (-1: the guest kernel's queue overflowed, count unknown). */
  dropped?: number;
}

/** A running watch. */
export class WatchHandle {
  constructor(
    private readonly abort: AbortController,
    private readonly ended: Promise<void>,
  ) {}

  /** Stops watching. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.ended.catch(() => {});
  }

  /**
   * Resolves when the watch ends without error (stopped, or the directory itself removed); rejects
   * with the error that ended it (`sandbox_not_running` when the sandbox was killed or paused).
   */
  wait(): Promise<void> {
    return this.ended;
  }
}

/** The sandbox's file system. Paths are absolute guest paths. Content streams both ways. */
export class Filesystem {
  constructor(private readonly api: ApiClient, private readonly sandboxId: string) {}

  private get base(): string {
    return `/v1/sandboxes/${this.sandboxId}/files`;
  }

  read(path: string, opts?: { format?: 'text' }): Promise<string>;
  read(path: string, opts: { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, opts: { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  async read(path: string, opts: { format?: 'text' | 'bytes' | 'stream' } = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const res = await this.api.request(this.base, { query: { path }, timeoutMs: opts.format === 'stream' ? false : undefined });
    switch (opts.format ?? 'text') {
      case 'bytes':
        return new Uint8Array(await res.arrayBuffer());
      case 'stream':
        return res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
      default:
        return res.text();
    }
  }

  /** Writes one file (parents are created), or several when given a list. */
  write(path: string, data: FileData, opts?: { mode?: number; append?: boolean }): Promise<WriteInfo>;
  write(files: Array<{ path: string; data: FileData; mode?: number; append?: boolean }>): Promise<WriteInfo[]>;
  async write(
    pathOrFiles: string | Array<{ path: string; data: FileData; mode?: number; append?: boolean }>,
    data?: FileData,
    opts: { mode?: number; append?: boolean } = {},
  ): Promise<WriteInfo | WriteInfo[]> {
    if (Array.isArray(pathOrFiles)) {
      const out: WriteInfo[] = [];
      for (const f of pathOrFiles) out.push(await this.write(f.path, f.data, { ...(f.mode !== undefined ? { mode: f.mode } : {}), ...(f.append !== undefined ? { append: f.append } : {}) }));
      return out;
    }
    const body = data ?? '';
    // the server answers an upload once it is all written: one that may take a while (a stream, or
    // more than 8 MiB) is not limited by the request timeout
    const size = typeof body === 'string' ? Buffer.byteLength(body) : body instanceof Blob ? body.size : ArrayBuffer.isView(body) || body instanceof ArrayBuffer ? body.byteLength : Infinity;
    const streaming = body instanceof ReadableStream || size > 8 * 1024 * 1024;
    return this.api.json<WriteInfo>(this.base, {
      method: 'PUT',
      query: { path: pathOrFiles, mode: opts.mode, append: opts.append },
      headers: { 'content-type': 'application/octet-stream' },
      body: body as RequestInit["body"],
      timeoutMs: streaming ? false : undefined,
    });
  }

  async list(path: string, opts: { depth?: number } = {}): Promise<EntryInfo[]> {
    const r = await this.api.json<{ entries: RawEntry[] }>(`${this.base}/list`, { query: { path, depth: opts.depth } });
    return r.entries.map(entry);
  }

  async getInfo(path: string): Promise<EntryInfo> {
    return entry(await this.api.json<RawEntry>(`${this.base}/stat`, { query: { path } }));
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.getInfo(path);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'file_not_found') return false;
      throw err;
    }
  }

  /** Creates a directory and its parents. Resolves false when it already existed. */
  async makeDir(path: string): Promise<boolean> {
    const r = await this.api.json<{ created: boolean }>(`${this.base}/mkdir`, { method: 'POST', json: { path, parents: true } });
    return r.created;
  }

  async rename(oldPath: string, newPath: string): Promise<EntryInfo> {
    await this.api.json(`${this.base}/rename`, { method: 'POST', json: { from: oldPath, to: newPath } });
    return this.getInfo(newPath);
  }

  /**
   * Watches a directory (with `recursive`, the directories below it too); resolves once the watch
   * is set. `onExit` is called when it ends (with the error, if one ended it).
   */
  async watchDir(
    path: string,
    onEvent: (e: FilesystemEvent) => void,
    opts: { recursive?: boolean; onExit?: (err?: SandboxError) => void } = {},
  ): Promise<WatchHandle> {
    const abort = new AbortController();
    const res = await this.api.request(`${this.base}/watch`, { query: { path, recursive: opts.recursive ?? false }, timeoutMs: false, signal: abort.signal });
    const events = ndjson(res);
    const first = await events.next();
    if (first.done || first.value.type !== 'watching') {
      abort.abort();
      throw new SandboxError('the watch stream did not begin with its watching event', { code: 'invalid_response' });
    }
    const ended = (async () => {
      try {
        for await (const ev of events) {
          if (ev.type === 'end') return;
          if (ev.type === 'error') throw errorFromResponse(503, { error: { code: String(ev.code), message: String(ev.message) } });
          onEvent({ type: ev.type as FilesystemEvent['type'], name: String(ev.name ?? ''), ...(ev.type === 'overflow' ? { dropped: Number(ev.dropped) } : {}) });
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        throw err;
      }
      if (!abort.signal.aborted) throw new SandboxError('the watch stream ended without an end event (the connection broke?)', { code: 'stream_ended' });
    })();
    ended.then(
      () => opts.onExit?.(),
      (err: SandboxError) => opts.onExit?.(err),
    );
    return new WatchHandle(abort, ended);
  }

  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.api.json(this.base, { method: 'DELETE', query: { path, recursive: opts.recursive ?? true } });
  }
}
