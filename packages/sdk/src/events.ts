import { ApiClient, ConnectionConfig, type ConnectionOpts } from './connection.js';
import { SandboxError } from './errors.js';

export type SandboxEventType = 'created' | 'paused' | 'resumed' | 'snapshotted' | 'forked' | 'killed' | 'failed' | 'timed_out';

/** One lifecycle event (`GET /v1/events`). */
export interface SandboxEvent {
  /** Monotonic: resume a stream after it with `lastEventId`. */
  id: number;
  type: SandboxEventType;
  sandboxId: string;
  at: Date;
  data: Record<string, unknown>;
}

export interface EventStreamOpts extends ConnectionOpts {
  /** Only this sandbox's events. */
  sandboxId?: string;
  /** Only these types. */
  types?: SandboxEventType[];
  /** Replay the events after this id, then follow (0: everything the server keeps). Default: only new events. */
  lastEventId?: number;
  /** Ends the stream. */
  signal?: AbortSignal;
}

/**
 * The server's lifecycle events as an async iterator: replayed after `lastEventId` when given, then
 * live, until `signal` aborts or the loop breaks. The stream has no request timeout (the server
 * sends heartbeats); a cut connection ends the iteration with an error: resume with the last id.
 */
export async function* streamEvents(opts: EventStreamOpts = {}, api = new ApiClient(new ConnectionConfig(opts))): AsyncGenerator<SandboxEvent> {
  const res = await api.request('/v1/events', {
    query: { sandboxId: opts.sandboxId, type: opts.types?.join(','), after: opts.lastEventId },
    headers: { accept: 'text/event-stream' },
    timeoutMs: false,
  });
  if (!res.body) return;
  const reader = res.body.getReader();
  const onAbort = () => void reader.cancel().catch(() => {});
  opts.signal?.addEventListener('abort', onAbort);
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (opts.signal?.aborted) return;
        throw err;
      }
      if (chunk.done) return;
      buf += decoder.decode(chunk.value, { stream: true });
      let sep: number;
      while ((sep = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, sep);
        buf = buf.slice(sep + (buf[sep] === '\r' ? 4 : 2));
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    await reader.cancel().catch(() => {});
  }
}

/** One SSE block: its `data` lines (comments and `retry` ignored). */
function parseBlock(block: string): SandboxEvent | undefined {
  const data: string[] = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length) return undefined;
  try {
    const raw = JSON.parse(data.join('\n')) as Omit<SandboxEvent, 'at'> & { at: string };
    return { ...raw, at: new Date(raw.at) };
  } catch (err) {
    throw new SandboxError(`the server sent an event that is not JSON: ${data.join('\n').slice(0, 100)}`, { code: 'invalid_response', cause: err });
  }
}
