import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { CONNECT_STATUS, ConnectError, connectError } from './errors.js';

/**
 * The Connect protocol (connectrpc.com/docs/protocol) as E2B's SDKs speak it to envd: JSON only, no
 * compression, POST only.
 * - unary: the request body is the message (`application/json`); the answer is 200 + the response
 *   message, or the error's HTTP status + `{"code", "message"}`;
 * - server streaming: the request body is one envelope (`application/connect+json`: a flag byte, a
 *   4-byte big-endian length, JSON); the answer is 200 + envelopes (flag 0) flushed as they come,
 *   ended by one end-of-stream envelope (flag 2): `{}` or `{"error": {"code", "message"}}`.
 */

export const STREAM_TYPE = 'application/connect+json';
const FLAG_END = 0x02;
const FLAG_COMPRESSED = 0x01;

function envelope(flag: number, msg: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(msg));
  const head = Buffer.alloc(5);
  head.writeUInt8(flag, 0);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

/** The message of a streaming request: its one envelope. */
export function parseEnvelope(body: unknown): Record<string, unknown> {
  if (!Buffer.isBuffer(body) || body.length < 5) throw new ConnectError('invalid_argument', 'expected one Connect envelope as the request body');
  const flag = body.readUInt8(0);
  if (flag & FLAG_COMPRESSED) throw new ConnectError('unimplemented', 'compressed messages are not supported');
  const len = body.readUInt32BE(1);
  if (body.length < 5 + len) throw new ConnectError('invalid_argument', 'truncated Connect envelope');
  return asMessage(JSON.parse(body.subarray(5, 5 + len).toString('utf8')));
}

/** The message of a unary request (a streaming one's envelope too: its method may not be there). */
export function requestMessage(body: unknown): Record<string, unknown> {
  return Buffer.isBuffer(body) ? parseEnvelope(body) : asMessage(body ?? {});
}

export function asMessage(v: unknown): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConnectError('invalid_argument', 'the request message must be a JSON object');
  return v as Record<string, unknown>;
}

/** Answers a unary call with `result` (a message) or its error. */
export async function unary(reply: FastifyReply, fn: () => Promise<unknown>): Promise<FastifyReply> {
  try {
    const out = await fn();
    return reply.status(200).type('application/json').send(JSON.stringify(out ?? {}));
  } catch (err) {
    return sendUnaryError(reply, err);
  }
}

export function sendUnaryError(reply: FastifyReply, err: unknown): FastifyReply {
  const e = connectError(err);
  if (e.code === 'internal') reply.log.error({ err: e.message }, 'e2b rpc failed');
  return reply.status(CONNECT_STATUS[e.code]).type('application/json').send(JSON.stringify({ code: e.code, message: e.message }));
}

/** The sending side of a server stream (flushed at once: headers, then each message). */
export interface StreamSink {
  send(msg: unknown): Promise<void>;
  /** Fires when the client went away. */
  readonly gone: AbortSignal;
}

/**
 * Answers a server-streaming call: `fn` sends messages and returns when the stream is done; its
 * error ends the stream with an error envelope (also before any message: status 200 either way,
 * as connect-go does).
 */
export async function serverStream(req: FastifyRequest, reply: FastifyReply, fn: (sink: StreamSink) => Promise<void>): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  let headersSent = false;
  const head = () => {
    if (headersSent) return;
    headersSent = true;
    res.writeHead(200, { 'content-type': STREAM_TYPE, 'cache-control': 'no-store' });
    res.flushHeaders();
  };
  const write = (buf: Buffer): Promise<void> =>
    new Promise((resolve) => {
      if (res.destroyed || res.writableEnded) return resolve();
      if (res.write(buf)) return resolve();
      const done = () => {
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.once('drain', done);
      res.once('close', done);
    });
  const sink: StreamSink = {
    send: async (msg) => {
      head();
      await write(envelope(0, msg));
    },
    gone: ac.signal,
  };
  let end: Record<string, unknown> = {};
  try {
    await fn(sink);
  } catch (err) {
    // (the client went away: nobody to tell)
    if (ac.signal.aborted) return void res.destroy();
    const e = connectError(err);
    if (e.code === 'internal') req.log.error({ err: e.message }, 'e2b stream failed');
    end = { error: { code: e.code, message: e.message } };
  }
  head();
  if (!res.destroyed) res.end(envelope(FLAG_END, end));
}

/** After how long without a message a stream gets a keepalive (envd: 50 s, the SDK's ping header). */
const KEEPALIVE_MS = 50_000;

/**
 * Relays an NDJSON stream of nullspace events (agentio's and terminals.ts's) as messages of a server
 * stream: each line goes through `translate` (undefined: nothing sent; a throw ends the stream with
 * that error), `keepalive` while it is quiet (a process stream's by default; null: none); the client
 * leaving ends the source. Returns when the source ends.
 */
export async function relay<L>(events: Readable, sink: StreamSink, translate: (line: L) => unknown, keepalive: unknown = { event: { keepalive: {} } }): Promise<void> {
  let last = Date.now();
  const timer = setInterval(() => {
    if (keepalive !== null && Date.now() - last >= KEEPALIVE_MS) {
      last = Date.now();
      void sink.send(keepalive);
    }
  }, 5_000);
  const onGone = () => events.destroy();
  sink.gone.addEventListener('abort', onGone, { once: true });
  try {
    let buf = '';
    for await (const chunk of events) {
      buf += String(chunk);
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line) continue;
        last = Date.now();
        const out = translate(JSON.parse(line) as L);
        if (out !== undefined) await sink.send(out);
      }
    }
  } finally {
    clearInterval(timer);
    sink.gone.removeEventListener('abort', onGone);
  }
}
