import type { Readable } from 'node:stream';
import { type GuestAgent, type OpRequest } from '@nullspace/runtime';
import { Feed, finishEvents, limit, openStarted, START_DEADLINE_MS, toEvents } from './agentio.js';
import { fromAgentError, NsError } from './errors.js';

/**
 * Terminals and file watches of a sandbox, over its agent (`pty.start`, `pty.resize`, `fs.watch`).
 * A terminal is a process of the agent's process table: input, signals and reattaching go through
 * the process calls of agentio.ts.
 */

export type PtyRequest = OpRequest<'pty.start'>;

/**
 * Starts a process on a terminal. Resolves, once it started, with an NDJSON stream of its events
 * (start, `data` chunks in base64, lost, end or error); the client leaving cancels the stream, not
 * the process.
 */
export async function startPty(agent: GuestAgent, req: PtyRequest, signal?: AbortSignal): Promise<{ pid: number; events: Readable }> {
  const out = new Feed();
  const ev = toEvents(out, true);
  const { stream, pid } = await openStarted(agent, 'pty.start', req, ev, signal, 'starting a terminal');
  // (a stream that ends without its started event, which the protocol does not do, is a failed start)
  if (pid === undefined) throw fromAgentError(undefined, 'starting a terminal');
  finishEvents(stream, out, ev.line);
  return { pid, events: out };
}

/** One line of a watch's NDJSON stream. */
export type WatchLine =
  | { type: 'watching'; path: string }
  | { type: 'create' | 'write' | 'remove' | 'rename' | 'chmod'; name: string }
  | { type: 'overflow'; dropped: number }
  | { type: 'end'; reason: 'removed' }
  | { type: 'error'; code: string; message: string };

/**
 * Watches a directory. Resolves once the watch is set (a missing path is an error response, not a
 * broken 200) with its NDJSON stream; `ended(err)` names the error line when the agent stream fails
 * (the sandbox was killed or paused, its agent went away).
 */
export async function watchDir(
  agent: GuestAgent,
  path: string,
  recursive: boolean,
  signal: AbortSignal,
  ended: (err: unknown) => NsError | Promise<NsError>,
): Promise<Readable> {
  const out = new Feed();
  const line = (e: WatchLine) => out.feed(JSON.stringify(e) + '\n');
  let resolveReady!: () => void;
  const ready = new Promise<void>((r) => (resolveReady = r));
  const stream = agent.open('fs.watch', { path, recursive }, {
    onEvent: (e) => {
      if (e.type === 'watching') {
        resolveReady();
        void line({ type: 'watching', path: e.path });
      } else if (e.type === 'change') void line({ type: e.op, name: e.name });
      else void line({ type: 'overflow', dropped: e.dropped });
    },
  });
  limit(stream, { signal, deadlineMs: START_DEADLINE_MS, until: ready });
  const failed = stream.result.then(
    () => undefined,
    (err: unknown) => err,
  );
  const first = await Promise.race([ready.then(() => 'ready' as const), failed.then((e) => ({ failed: e }))]);
  if (first !== 'ready') throw fromAgentError(first.failed ?? new NsError('internal', 'the watch ended before it started'), `watching ${path}`);
  out.on('close', () => {
    if (!stream.done) stream.cancel('client went away');
  });
  stream.result.then(
    async () => {
      await line({ type: 'end', reason: 'removed' });
      out.push(null);
    },
    async (err: unknown) => {
      const e = await ended(err);
      await line({ type: 'error', code: e.code, message: e.message });
      out.push(null);
    },
  );
  return out;
}
