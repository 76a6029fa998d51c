import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { Channel, NsError, type AgentStream, type Entry, type GuestAgent, type OpEvent, type OpRequest, type OpResult, type ProcessInfo, type StreamHandlers } from '@nullspace/runtime';
import { fromAgentError } from './errors.js';

/**
 * Files and commands of a sandbox, over its agent. Data is streamed both ways with backpressure:
 * nothing here holds a whole file or a whole command output in memory.
 *
 * No agent request outlives its reason: each is cancelled (the agent stops the work in the guest)
 * when its client leaves, and each has a deadline for the agent's answer (for a transfer, for its
 * start), after which it fails with 503 `agent_unavailable`.
 */

/** How long the agent has for a file operation other than a transfer (list, stat, mkdir, rename, remove). */
export const FILE_OP_DEADLINE_MS = 120_000;
/** How long the agent has to start a command, to begin a read, or to take the next piece of an upload. */
export const START_DEADLINE_MS = 30_000;

/**
 * Fires when the client of `res` leaves before its answer is complete (the connection closed): the
 * agent work for it is cancelled.
 */
export function clientGone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac.signal;
}

interface Limits {
  /** The client's `clientGone`: the stream is cancelled when it fires. */
  signal?: AbortSignal | undefined;
  /** The stream is cancelled unless `until` (default: its result) settles within this long. */
  deadlineMs?: number;
  until?: Promise<unknown>;
}

/** Cancels `stream` when its client leaves, or when the agent misses the deadline. */
export function limit(stream: AgentStream, { signal, deadlineMs, until }: Limits): void {
  if (stream.done) return;
  const onGone = () => stream.cancel('the client went away');
  if (signal?.aborted) return onGone();
  signal?.addEventListener('abort', onGone, { once: true });
  const timer = deadlineMs ? setTimeout(() => stream.cancel(`the guest did not answer within ${deadlineMs / 1000} s`), deadlineMs) : undefined;
  const settled = () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onGone);
  };
  void (until ?? stream.result).then(() => clearTimeout(timer), () => clearTimeout(timer));
  void stream.result.then(settled, settled);
}

export function checkPath(p: unknown, field = 'path'): string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > 4096) {
    throw new NsError('invalid_path', `${field} must be an absolute path (got ${JSON.stringify(p)?.slice(0, 100)})`, { details: { field } });
  }
  return p;
}

/**
 * A Readable fed by an agent stream, with backpressure: `push` resolves once the consumer wants
 * more, and the agent gets credit back only then.
 */
export class Feed extends Readable {
  /** Every producer waiting for room (output data and event lines may wait at the same time). */
  private waiting: Array<() => void> = [];
  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }
  override _read(): void {
    this.wake();
  }
  feed(chunk: Buffer | string): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    if (this.push(chunk)) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.wake();
    cb(err);
  }
}

/**
 * Opens a file for reading. Resolves once the agent has answered (first bytes, end, or error), so
 * that a missing file is an error response, not a broken 200.
 */
export function readFile(agent: GuestAgent, path: string, signal?: AbortSignal): Promise<Readable> {
  const out = new Feed();
  let stream: AgentStream | undefined;
  const opened = new Promise<Readable>((resolve, reject) => {
    let started = false;
    const start = () => {
      if (!started) {
        started = true;
        resolve(out);
      }
    };
    stream = agent.open('fs.read', { path }, {
      onData: (_channel, chunk) => {
        start();
        return out.feed(chunk);
      },
    });
    out.on('close', () => {
      if (stream && !stream.done) stream.cancel('reader went away');
    });
    stream.result.then(
      () => {
        start();
        out.push(null);
      },
      (err: unknown) => {
        const e = fromAgentError(err, `reading ${path}`);
        if (!started) {
          started = true;
          reject(e);
        } else {
          out.destroy(e);
        }
      },
    );
  });
  limit(stream!, { signal, deadlineMs: START_DEADLINE_MS, until: opened });
  return opened;
}

/** Streams `source` into a file of the sandbox. A failed or aborted upload leaves the old file. */
export async function writeFile(
  agent: GuestAgent,
  path: string,
  source: AsyncIterable<Buffer | string>,
  opts: { mode?: number; append?: boolean; maxBytes: number; signal?: AbortSignal | undefined; owner?: string | undefined },
): Promise<{ path: string; size: number }> {
  const stream = agent.open('fs.write', { path, ...(opts.mode !== undefined ? { mode: opts.mode } : {}), append: opts.append ?? false, ...(opts.owner !== undefined ? { owner: opts.owner } : {}) });
  limit(stream, { signal: opts.signal });
  // the agent's end (its VM killed, an error) ends the upload at once, also while the client sends nothing
  const agentEnded = new Promise<never>((_, reject) => void stream.result.catch(reject));
  agentEnded.catch(() => {});
  const chunks = source[Symbol.asyncIterator]();
  let total = 0;
  let stalled = false;
  try {
    for (;;) {
      const next = await Promise.race([chunks.next(), agentEnded]);
      if (next.done) break;
      const chunk = next.value;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      total += buf.length;
      if (total > opts.maxBytes) {
        throw new NsError('payload_too_large', `upload exceeds the limit of ${opts.maxBytes} bytes`, { details: { limit: opts.maxBytes } });
      }
      // the agent takes the data as it writes it: a guest that takes none for this long is stuck
      const stall = setTimeout(() => {
        stalled = true;
        stream.cancel(`the guest took no data for ${START_DEADLINE_MS / 1000} s`);
      }, START_DEADLINE_MS);
      await stream.write(buf).finally(() => clearTimeout(stall));
      if (stream.done) break;
    }
    stream.end();
  } catch (err) {
    stream.cancel('upload aborted');
    // stop reading the body (not awaited: a read may be pending, and the client may never send more)
    void chunks.return?.()?.catch(() => {});
    if (err instanceof NsError && err.code === 'payload_too_large') throw err;
    if (stalled) throw new NsError('agent_unavailable', `writing ${path}: the guest took no data for ${START_DEADLINE_MS / 1000} s`);
    // the agent's own error (e.g. no_space) is more telling than the cancellation
    const agentErr = await stream.result.then(() => undefined, (e: unknown) => e);
    if (agentErr instanceof NsError && agentErr.code !== 'cancelled') throw fromAgentError(agentErr, `writing ${path}`);
    throw new NsError('bad_request', `upload of ${path} aborted: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    const r = await stream.result;
    return { path: r.path, size: r.size };
  } catch (err) {
    throw fromAgentError(err, `writing ${path}`);
  }
}

export async function callFs<O extends 'fs.stat' | 'fs.mkdir' | 'fs.remove' | 'fs.rename'>(
  agent: GuestAgent,
  op: O,
  args: OpRequest<O>,
  subject: string,
  signal?: AbortSignal,
): Promise<OpResult<O>> {
  const stream = agent.open(op, args);
  limit(stream, { signal, deadlineMs: FILE_OP_DEADLINE_MS });
  try {
    return await stream.result;
  } catch (err) {
    throw fromAgentError(err, subject);
  }
}

export async function listDir(agent: GuestAgent, path: string, depth: number, signal?: AbortSignal): Promise<Entry[]> {
  const entries: Entry[] = [];
  const stream = agent.open('fs.list', { path, depth }, {
    onEvent: (e) => {
      if (e.type === 'entries') entries.push(...e.entries);
    },
  });
  limit(stream, { signal, deadlineMs: FILE_OP_DEADLINE_MS });
  try {
    await stream.result;
  } catch (err) {
    throw fromAgentError(err, `listing ${path}`);
  }
  return entries;
}

export interface CommandRequest {
  cmd: string;
  /** Run this program with these arguments, no shell (`cmd` is then only what the process list shows). */
  argv?: string[] | undefined;
  cwd?: string | undefined;
  envs?: Record<string, string> | undefined;
  user?: string | undefined;
  timeoutMs?: number | undefined;
  /** Keep stdin open for later `sendStdin` (otherwise stdin is /dev/null or `input`). */
  stdin?: boolean | undefined;
  /** Text written to stdin, which is then closed. */
  input?: string | undefined;
  tag?: string | undefined;
}

/** One line of a command's (or a terminal's: output is `data`) NDJSON output stream. */
export type CommandEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'data'; data: string }
  | { type: 'lost'; bytes: number }
  | ({ type: 'end' } & ProcessInfo)
  | { type: 'error'; code: string; message: string };

/** The NDJSON lines of a process's events and output (a terminal's output is `data`, not `stdout`). */
export function toEvents(out: Feed, terminal = false) {
  const line = (e: CommandEvent) => out.feed(JSON.stringify(e) + '\n');
  return {
    onEvent: (e: OpEvent<'proc.start'>) => {
      if (e.type === 'started') void line({ type: 'start', pid: e.pid });
      else if (e.type === 'lost') void line({ type: 'lost', bytes: e.bytes });
    },
    onData: (channel: number, chunk: Buffer) =>
      line({ type: terminal ? 'data' : channel === Channel.STDERR ? 'stderr' : 'stdout', data: chunk.toString('base64') }),
    line,
  };
}

export function finishEvents(stream: AgentStream<'proc.start' | 'proc.attach' | 'pty.start'>, out: Feed, line: (e: CommandEvent) => Promise<void>): void {
  out.on('close', () => {
    if (!stream.done) stream.cancel('client went away');
  });
  stream.result.then(
    async (r) => {
      await line({ ...r, type: 'end' });
      out.push(null);
    },
    async (err: unknown) => {
      const e = fromAgentError(err, 'command');
      await line({ type: 'error', code: e.code, message: e.message });
      out.push(null);
    },
  );
}

/**
 * Opens the stream of a process start (`proc.start`, `pty.start`), its events fed to `ev`, and waits
 * for the agent's started event: resolves with the stream and the pid (undefined when the stream
 * ended without one, which the protocol does not do), or throws the start's failure (`what`
 * names it). Until it started, the client leaving or START_DEADLINE_MS cancels the stream.
 */
export async function openStarted<O extends 'proc.start' | 'pty.start'>(
  agent: GuestAgent,
  op: O,
  req: OpRequest<O>,
  ev: ReturnType<typeof toEvents>,
  signal: AbortSignal | undefined,
  what: string,
): Promise<{ stream: AgentStream<O>; pid: number | undefined }> {
  let resolveStart!: (pid: number) => void;
  const started = new Promise<number>((r) => (resolveStart = r));
  const stream = agent.open(op, req, {
    onEvent: (e: OpEvent<'proc.start'>) => {
      if (e.type === 'started') resolveStart(e.pid);
      ev.onEvent(e);
    },
    onData: ev.onData,
  } as StreamHandlers<O>);
  // until it started, the client leaving cancels the start; a foreground stream is cancelled when
  // its client leaves later on too (finishEvents)
  limit(stream, { signal, deadlineMs: START_DEADLINE_MS, until: started });
  const failed = stream.result.then(
    () => undefined,
    (err: unknown) => err,
  );
  const first = await Promise.race([started, failed.then((e) => ({ failed: e }))]);
  if (typeof first === 'number') return { stream, pid: first };
  if (first.failed !== undefined) throw fromAgentError(first.failed, what);
  return { stream, pid: undefined };
}

/**
 * Starts a command. For a foreground command, resolves with an NDJSON stream of its events as soon
 * as it started (start, stdout/stderr chunks in base64, end). Fails before any output when the
 * command cannot start, or when the guest has not started it within START_DEADLINE_MS (the agent
 * then kills it if it starts later). With `background`, resolves with the pid and leaves the process
 * running. `input` is written while the output streams (a process may read it slowly, or never).
 */
export async function startCommand(agent: GuestAgent, req: CommandRequest, background: boolean, signal?: AbortSignal): Promise<{ pid: number; events?: Readable }> {
  const out = new Feed();
  const ev = toEvents(out);
  const useStdin = req.stdin === true || req.input !== undefined;
  const { stream, pid: startedPid } = await openStarted(
    agent,
    'proc.start',
    {
      cmd: req.cmd,
      ...(req.argv !== undefined ? { argv: req.argv } : {}),
      ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      ...(req.envs !== undefined ? { envs: req.envs } : {}),
      ...(req.user !== undefined ? { user: req.user } : {}),
      timeoutMs: req.timeoutMs ?? 0,
      stdin: useStdin,
      ...(req.tag !== undefined ? { tag: req.tag } : {}),
    },
    ev,
    signal,
    'starting command',
  );
  const pid = startedPid ?? 0;
  const input =
    req.input === undefined
      ? Promise.resolve()
      : (async () => {
          try {
            await stream.write(Buffer.from(req.input!));
            if (req.stdin !== true) stream.end();
            await stream.flushed();
          } catch {
            // the process ended before it read everything (or the stream failed): its end says so
          }
        })();
  if (background) {
    // with stdin kept open, later writes (POST .../stdin) must come after the input: answer once it is
    // in; otherwise at once. Either way the stream detaches once the agent has put all of the input
    // into the process's stdin.
    if (req.stdin === true) await input;
    void input.then(() => stream.cancel('background command: the client detached'));
    return { pid };
  }
  finishEvents(stream, out, ev.line);
  return { pid, events: out };
}

/** The largest piece of stdin data sent in one proc.stdin (base64 grows it by 4/3; a frame holds 1 MiB). */
const STDIN_PIECE_BYTES = 512 * 1024;

/** Writes `data` to the stdin of process `pid` (in pieces that each fit in a frame), then closes it if asked. */
export async function writeStdin(agent: GuestAgent, pid: number, data: Buffer, close: boolean): Promise<void> {
  let off = 0;
  do {
    const piece = data.subarray(off, off + STDIN_PIECE_BYTES);
    off += piece.length;
    await agent.call('proc.stdin', { pid, ...(piece.length ? { data: piece.toString('base64') } : {}), close: close && off >= data.length });
  } while (off < data.length);
}

/** Output and end of a process started earlier (replaying what the agent still holds). */
export async function attachCommand(agent: GuestAgent, pid: number, replay: boolean, terminal = false): Promise<Readable> {
  // an unknown pid is an error response, not an error inside a 200 stream
  const { processes } = await agent.call('proc.list');
  if (!processes.some((p) => p.pid === pid)) throw new NsError('process_not_found', `process ${pid} not found`, { details: { pid } });
  const out = new Feed();
  const ev = toEvents(out, terminal);
  // an immediate first line: the client gets the response (headers) at once, not at the first output
  void ev.line({ type: 'start', pid });
  const stream = agent.open('proc.attach', { pid, replay }, { onEvent: ev.onEvent, onData: ev.onData });
  finishEvents(stream, out, ev.line);
  return out;
}
