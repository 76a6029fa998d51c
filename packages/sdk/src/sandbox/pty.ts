import { ndjson, type ApiClient } from '../connection.js';
import { SandboxError, errorFromResponse } from '../errors.js';

export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyCreateOpts {
  /** Window width (default 80). */
  cols?: number;
  /** Window height (default 24). */
  rows?: number;
  /** The terminal's output, as it comes (bytes: escape sequences may be split across chunks). */
  onData?: (data: Uint8Array) => void;
  /** Run this with /bin/bash -c instead of the user's login shell. */
  cmd?: string;
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
  tag?: string;
}

/** A terminal this client follows. Its process lives in the sandbox: disconnecting leaves it running. */
export class PtyHandle {
  private readonly ended: Promise<number>;
  /** Output bytes dropped for this client (it fell more than 4 MiB behind, or was away meanwhile). */
  lostBytes = 0;
  /** Once it ended: the signal that ended it (e.g. "SIGKILL"), or null. */
  signal: string | null = null;

  constructor(
    private readonly pty: Pty,
    readonly pid: number,
    private readonly abort: AbortController,
    events: AsyncGenerator<Record<string, unknown>>,
    onData: ((data: Uint8Array) => void) | undefined,
  ) {
    const ended = new SandboxError(`the terminal's output stream ended without an exit status (disconnected, or the sandbox went away)`, { code: 'stream_ended' });
    this.ended = (async () => {
      try {
        for await (const ev of events) {
          if (ev.type === 'data') onData?.(Buffer.from(String(ev.data), 'base64'));
          else if (ev.type === 'lost') this.lostBytes += Number(ev.bytes ?? 0);
          else if (ev.type === 'end') {
            this.signal = (ev.signal as string | null) ?? null;
            return (ev.exitCode as number | null) ?? -1;
          }
          else if (ev.type === 'error') throw errorFromResponse(503, { error: { code: String(ev.code), message: String(ev.message) } });
        }
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      }
      throw ended;
    })();
    this.ended.catch(() => {});
  }

  /** Resolves with the exit code when the terminal's process ends (-1 when a signal ended it). */
  wait(): Promise<number> {
    return this.ended;
  }

  /** Stops following the terminal; it keeps running (`sandbox.pty.connect(pid)` reattaches). */
  async disconnect(): Promise<void> {
    this.abort.abort();
    await this.ended.catch(() => {});
  }

  sendInput(data: string | Uint8Array): Promise<void> {
    return this.pty.sendInput(this.pid, data);
  }

  resize(size: PtySize): Promise<void> {
    return this.pty.resize(this.pid, size);
  }

  kill(signal = 'SIGKILL'): Promise<boolean> {
    return this.pty.kill(this.pid, signal);
  }
}

/** Terminals of a sandbox: processes on a pseudo-terminal, the login shell by default. */
export class Pty {
  constructor(private readonly api: ApiClient, private readonly sandboxId: string) {}

  private get base(): string {
    return `/v1/sandboxes/${this.sandboxId}/pty`;
  }

  /** Starts a terminal; resolves once it runs (`handle.pid`), its output going to `onData`. */
  async create(opts: PtyCreateOpts = {}): Promise<PtyHandle> {
    const { onData, ...rest } = opts;
    const abort = new AbortController();
    const res = await this.api.request(this.base, { method: 'POST', json: rest, timeoutMs: false, signal: abort.signal });
    return this.follow(res, abort, onData);
  }

  /** Follows a terminal started earlier: the output the sandbox still holds is replayed first. */
  async connect(pid: number, opts: { onData?: (data: Uint8Array) => void } = {}): Promise<PtyHandle> {
    const abort = new AbortController();
    const res = await this.api.request(`${this.base}/${pid}/stream`, { query: { replay: true }, timeoutMs: false, signal: abort.signal });
    return this.follow(res, abort, opts.onData);
  }

  private async follow(res: Response, abort: AbortController, onData: ((data: Uint8Array) => void) | undefined): Promise<PtyHandle> {
    const events = ndjson(res);
    const first = await events.next();
    if (first.done || first.value.type !== 'start') {
      abort.abort();
      throw new SandboxError('the terminal stream did not begin with its start event', { code: 'invalid_response' });
    }
    return new PtyHandle(this, Number(first.value.pid), abort, events, onData);
  }

  /** Types into a terminal (a string is sent as UTF-8; "\x03" is Ctrl-C). */
  async sendInput(pid: number, data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.api.json(`${this.base}/${pid}/input`, { method: 'POST', json: { data: bytes.toString('base64') } });
  }

  /** Sets the window size (the terminal's programs get SIGWINCH). */
  async resize(pid: number, size: PtySize): Promise<void> {
    await this.api.json(`${this.base}/${pid}/resize`, { method: 'POST', json: { cols: size.cols, rows: size.rows } });
  }

  /** Signals the terminal's process group and its foreground job. Resolves false when it is not running. */
  async kill(pid: number, signal = 'SIGKILL'): Promise<boolean> {
    try {
      await this.api.json(`${this.base}/${pid}/kill`, { method: 'POST', json: { signal } });
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'process_not_found' || code === 'process_not_running') return false;
      throw err;
    }
  }
}
