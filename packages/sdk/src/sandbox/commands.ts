import { ndjson, type ApiClient } from '../connection.js';
import { SandboxError, TimeoutError, errorFromResponse } from '../errors.js';

export interface CommandResult {
  pid: number;
  exitCode: number | null;
  /** Signal that ended the process, e.g. "SIGKILL". */
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /**
   * Output bytes the server dropped because this client fell more than 4 MiB behind (stdout and
   * stderr together); 0 when `stdout`/`stderr` are complete.
   */
  lostBytes: number;
}

export interface ProcessInfo {
  pid: number;
  cmd: string;
  cwd: string;
  tag: string;
  startedAt: Date;
  running: boolean;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
}

export interface CommandStartOpts {
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
  /** Kill the command after this long; 0 = never. Default 60000. */
  timeoutMs?: number;
  /** Keep stdin open for `sendStdin`. */
  stdin?: boolean;
  /** Text written to stdin (then closed unless `stdin` is true). */
  input?: string;
  tag?: string;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

/** Text decoding per stream (UTF-8 sequences may be split across chunks). */
class Output {
  stdout = '';
  stderr = '';
  lostBytes = 0;
  private dec = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  constructor(private readonly opts: CommandStartOpts) {}
  add(kind: 'stdout' | 'stderr', base64: string): void {
    this.emit(kind, this.dec[kind].decode(Buffer.from(base64, 'base64'), { stream: true }));
  }
  /** At the end: an incomplete UTF-8 sequence left in a decoder becomes U+FFFD rather than vanish. */
  flush(): void {
    this.emit('stdout', this.dec.stdout.decode());
    this.emit('stderr', this.dec.stderr.decode());
  }
  private emit(kind: 'stdout' | 'stderr', text: string): void {
    if (!text) return;
    this[kind] += text;
    (kind === 'stdout' ? this.opts.onStdout : this.opts.onStderr)?.(text);
  }
}

async function consume(res: Response, out: Output, pidHint: number): Promise<CommandResult> {
  for await (const ev of ndjson(res)) {
    switch (ev.type) {
      case 'stdout':
      case 'stderr':
        out.add(ev.type, String(ev.data));
        break;
      case 'lost':
        out.lostBytes += Number(ev.bytes ?? 0);
        break;
      case 'end': {
        out.flush();
        const result: CommandResult = {
          pid: Number(ev.pid ?? pidHint),
          exitCode: (ev.exitCode as number | null) ?? null,
          signal: (ev.signal as string | null) ?? null,
          stdout: out.stdout,
          stderr: out.stderr,
          timedOut: ev.timedOut === true,
          lostBytes: out.lostBytes,
        };
        if (result.timedOut) {
          const err = new TimeoutError(`command (pid ${result.pid}) was killed after its timeout`, { code: 'command_timeout' });
          err.result = result;
          throw err;
        }
        return result;
      }
      case 'error':
        throw errorFromResponse(503, { error: { code: String(ev.code), message: String(ev.message) } });
      default:
        break;
    }
  }
  throw new SandboxError('the command output stream ended without an exit status (sandbox killed?)', { code: 'stream_ended' });
}

/** A command running in the background. */
export class CommandHandle {
  private result: Promise<CommandResult>;
  private out: Output;

  constructor(
    private readonly commands: Commands,
    readonly pid: number,
    attach: Promise<Response>,
    opts: CommandStartOpts,
  ) {
    this.out = new Output(opts);
    this.result = attach.then((res) => consume(res, this.out, pid));
    this.result.catch(() => {});
  }

  get stdout(): string {
    return this.out.stdout;
  }

  get stderr(): string {
    return this.out.stderr;
  }

  /** Resolves when the process ends (rejects with TimeoutError when it outlived its timeout). */
  wait(): Promise<CommandResult> {
    return this.result;
  }

  kill(signal = 'SIGKILL'): Promise<boolean> {
    return this.commands.kill(this.pid, signal);
  }

  sendStdin(data: string, opts: { close?: boolean } = {}): Promise<void> {
    return this.commands.sendStdin(this.pid, data, opts);
  }
}

/** Commands of a sandbox, run with /bin/bash -c (default cwd /workspace, user root). */
export class Commands {
  constructor(private readonly api: ApiClient, private readonly sandboxId: string) {}

  private get base(): string {
    return `/v1/sandboxes/${this.sandboxId}/commands`;
  }

  /** Runs a command to its end; resolves with its output and exit code whatever the code. */
  run(cmd: string, opts?: CommandStartOpts & { background?: false }): Promise<CommandResult>;
  /** Starts a command and resolves at once with a handle. */
  run(cmd: string, opts: CommandStartOpts & { background: true }): Promise<CommandHandle>;
  async run(cmd: string, opts: CommandStartOpts & { background?: boolean } = {}): Promise<CommandResult | CommandHandle> {
    const body = {
      cmd,
      cwd: opts.cwd,
      envs: opts.envs,
      user: opts.user,
      timeoutMs: opts.timeoutMs,
      stdin: opts.stdin,
      input: opts.input,
      tag: opts.tag,
      background: opts.background === true,
    };
    if (opts.background) {
      const { pid } = await this.api.json<{ pid: number }>(this.base, { method: 'POST', json: body });
      return new CommandHandle(this, pid, this.attach(pid), opts);
    }
    const res = await this.api.request(this.base, { method: 'POST', json: body, timeoutMs: false });
    return consume(res, new Output(opts), 0);
  }

  /** Follows a process started earlier (its output is replayed from the start while the sandbox holds it). */
  async connect(pid: number, opts: Pick<CommandStartOpts, 'onStdout' | 'onStderr'> = {}): Promise<CommandHandle> {
    const res = await this.attach(pid);
    return new CommandHandle(this, pid, Promise.resolve(res), opts);
  }

  private attach(pid: number): Promise<Response> {
    return this.api.request(`${this.base}/${pid}/stream`, { query: { replay: true }, timeoutMs: false });
  }

  async list(): Promise<ProcessInfo[]> {
    const r = await this.api.json<{ processes: Array<Omit<ProcessInfo, 'startedAt'> & { startedAtMs: number }> }>(this.base);
    return r.processes.map(({ startedAtMs, ...p }) => ({ ...p, startedAt: new Date(startedAtMs) }));
  }

  /** Signals a process group. Resolves false when there is no such (running) process. */
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

  async sendStdin(pid: number, data: string, opts: { close?: boolean } = {}): Promise<void> {
    await this.api.json(`${this.base}/${pid}/stdin`, { method: 'POST', json: { data, close: opts.close ?? false } });
  }
}
