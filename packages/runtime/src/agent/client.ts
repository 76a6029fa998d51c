import { EventEmitter } from 'node:events';
import net from 'node:net';
import { NsError, type AgentErrorCode } from '../errors.js';
import {
  AGENT_ERROR_CODES,
  Channel,
  encodeFrame,
  FrameDecoder,
  FrameType,
  INITIAL_WINDOW_BYTES,
  MAGIC,
  MAX_DATA_FRAME_BYTES,
  type AgentOp,
  type Frame,
  type OpEvent,
  type OpRequest,
  type OpResult,
} from './protocol.js';

export type Json = Record<string, unknown>;

export interface StreamHandlers<O extends AgentOp = AgentOp> {
  /** An EVENT of the op (spec/agent.json events). */
  onEvent?(event: OpEvent<O>): void;
  /** Output of the agent. Credit for these bytes is returned to the agent once the promise settles. */
  onData?: (channel: number, chunk: Buffer) => void | Promise<void>;
}

/** An agent error (ERROR frame): `code` is one of spec/agent.json's errorCodes. */
export class AgentError extends NsError {
  declare readonly code: AgentErrorCode;
  constructor(code: string, message: string) {
    // a code this build does not know (an agent of another version) is an I/O error of the guest
    const known = (AGENT_ERROR_CODES as readonly string[]).includes(code);
    super(known ? (code as AgentErrorCode) : 'io_error', known ? message : `${message} (agent error code ${code})`);
    this.name = 'AgentError';
  }
}

/**
 * The arguments of `op` after its name: its request (which may be left out when none of its fields is
 * required), then `Rest`.
 */
export type OpArgs<O extends AgentOp, Rest extends unknown[]> = {} extends OpRequest<O>
  ? [args?: OpRequest<O>, ...rest: Rest]
  : [args: OpRequest<O>, ...rest: Rest];

/**
 * One request of the agent protocol: an OPEN, then data both ways, then a RESULT or ERROR. The
 * payloads are typed by op from spec/agent.json (the agent is checked against the same spec), not
 * validated at run time.
 */
export class AgentStream<O extends AgentOp = AgentOp> {
  readonly result: Promise<OpResult<O>>;
  // (of any value: a stream of one op is a stream of any op)
  private resolveResult!: (v: unknown) => void;
  private rejectResult!: (e: Error) => void;
  private credit = INITIAL_WINDOW_BYTES;
  /** Bytes received and not yet handed back as credit. */
  private unacked = 0;
  private creditWaiters: Array<() => void> = [];
  private settled = false;
  /** Serializes onData deliveries so that output stays in order. */
  private delivery: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: AgentClient,
    readonly id: number,
    readonly op: O,
    private readonly handlers: StreamHandlers<O>,
  ) {
    this.result = new Promise<OpResult<O>>((resolve, reject) => {
      this.resolveResult = resolve as (v: unknown) => void;
      this.rejectResult = reject;
    });
    // callers may attach late; never let an unobserved rejection crash the process
    this.result.catch(() => {});
  }

  get done(): boolean {
    return this.settled;
  }

  /** Sends bytes on `channel` (default main), waiting for credit as the agent consumes them. */
  async write(data: Buffer, channel: number = Channel.MAIN): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      if (this.settled) throw new AgentError('cancelled', `${this.op}: stream closed while writing`);
      if (this.credit <= 0) {
        await new Promise<void>((r) => this.creditWaiters.push(r));
        continue;
      }
      const n = Math.min(this.credit, MAX_DATA_FRAME_BYTES, data.length - offset);
      const payload = Buffer.allocUnsafe(n + 1);
      payload[0] = channel;
      data.copy(payload, 1, offset, offset + n);
      this.credit -= n;
      offset += n;
      await this.client.send(FrameType.DATA, this.id, payload);
    }
  }

  /**
   * Resolves once the agent has consumed everything written so far (its credit is whole again: for
   * process stdin, the bytes are in the process's pipe), or the stream ended.
   */
  async flushed(): Promise<void> {
    while (!this.settled && this.credit < INITIAL_WINDOW_BYTES) await new Promise<void>((r) => this.creditWaiters.push(r));
  }

  /** Resolves once every DATA received so far was handed to onData (and its promise settled). */
  delivered(): Promise<void> {
    return this.delivery.then(
      () => {},
      () => {},
    );
  }

  /** No more data from the host on this stream. */
  end(): void {
    if (!this.settled) void this.client.send(FrameType.END, this.id).catch(() => {});
  }

  /** Abandons the request; the agent releases what it holds. */
  cancel(reason = 'cancelled'): void {
    if (this.settled) return;
    void this.client.send(FrameType.CANCEL, this.id).catch(() => {});
    this.fail(new AgentError('cancelled', `${this.op}: ${reason}`));
  }

  /** @internal */
  handle(frame: Frame): void {
    switch (frame.type) {
      case FrameType.EVENT:
        this.handlers.onEvent?.(parseJson(frame.payload) as unknown as OpEvent<O>);
        break;
      case FrameType.DATA: {
        const channel = frame.payload[0] ?? 0;
        const chunk = frame.payload.subarray(1);
        // the agent may send only what it has credit for: more is a broken or hostile guest
        this.unacked += chunk.length;
        if (this.unacked > INITIAL_WINDOW_BYTES) {
          this.client.abort(`agent ${this.op}: sent ${this.unacked} bytes beyond its ${INITIAL_WINDOW_BYTES}-byte window`);
          return;
        }
        this.delivery = this.delivery.then(async () => {
          try {
            await this.handlers.onData?.(channel, chunk);
          } finally {
            this.unacked -= chunk.length;
            if (!this.settled) void this.client.sendWindow(this.id, chunk.length);
          }
        });
        break;
      }
      case FrameType.WINDOW:
        this.credit += frame.payload.readUInt32BE(0);
        for (const w of this.creditWaiters.splice(0)) w();
        break;
      case FrameType.RESULT: {
        const value = parseJson(frame.payload) as OpResult<O>;
        // deliver all output before the result
        void this.delivery.then(() => this.finish(value), (err: unknown) => this.fail(err as Error));
        this.settled = true;
        this.client.forget(this.id);
        break;
      }
      case FrameType.ERROR: {
        const e = parseJson(frame.payload);
        const err = new AgentError(String(e.code ?? 'io_error'), `${this.op}: ${String(e.message ?? 'agent error')}`);
        void this.delivery.then(() => this.fail(err), () => this.fail(err));
        this.settled = true;
        this.client.forget(this.id);
        break;
      }
      default:
        break;
    }
  }

  private finish(value: OpResult<O>): void {
    this.settled = true;
    for (const w of this.creditWaiters.splice(0)) w();
    this.resolveResult(value);
  }

  /** @internal */
  fail(err: Error): void {
    this.settled = true;
    this.client.forget(this.id);
    for (const w of this.creditWaiters.splice(0)) w();
    this.rejectResult(err);
  }
}

function parseJson(b: Buffer): Json {
  try {
    const v: unknown = JSON.parse(b.toString('utf8'));
    return v && typeof v === 'object' ? (v as Json) : {};
  } catch {
    return {};
  }
}

/**
 * A session with the guest agent over its unix socket (the QEMU chardev of the virtio-serial port).
 * Emits 'close' once when the session ends; every open stream then fails with `agent_unavailable`.
 */
export class AgentClient extends EventEmitter {
  private nextStream = 1;
  private streams = new Map<number, AgentStream>();
  private closed = false;

  private constructor(private readonly socket: net.Socket, decoder: FrameDecoder, initial: Frame[]) {
    super();
    const dispatch = (frames: Frame[]) => {
      for (const f of frames) this.streams.get(f.stream)?.handle(f);
    };
    socket.on('data', (chunk: Buffer) => {
      try {
        dispatch(decoder.push(chunk));
      } catch (err) {
        socket.destroy(err as Error);
      }
    });
    const onEnd = () => {
      if (this.closed) return;
      this.closed = true;
      for (const s of this.streams.values()) s.fail(new NsError('agent_unavailable', `agent ${s.op}: connection to the agent closed`));
      this.streams.clear();
      this.emit('close');
    };
    socket.on('close', onEnd);
    socket.on('error', onEnd);
    dispatch(initial);
  }

  /**
   * Connects and performs the magic handshake. Data the host sends before the guest has opened its
   * end of the port is dropped by the guest driver, so an attempt that gets no answer is retried on
   * a fresh connection until `timeoutMs`.
   */
  static async connect(socketPath: string, opts: { timeoutMs?: number; isAlive?: () => boolean } = {}): Promise<AgentClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    // a restored agent answers in well under a second; a booting guest may not have opened its port yet
    let attemptMs = 1500;
    let lastErr: unknown;
    while (Date.now() < deadline) {
      if (opts.isAlive && !opts.isAlive()) break;
      try {
        return await AgentClient.attempt(socketPath, Math.min(attemptMs, Math.max(50, deadline - Date.now())));
      } catch (err) {
        lastErr = err;
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ECONNREFUSED') {
          await new Promise((r) => setTimeout(r, 10));
        }
        attemptMs = Math.min(attemptMs * 2, 2000);
      }
    }
    throw new NsError('agent_unavailable', `the guest agent did not answer on ${socketPath}: ${lastErr instanceof Error ? lastErr.message : String(lastErr ?? 'timeout')}`);
  }

  private static attempt(socketPath: string, timeoutMs: number): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      const decoder = new FrameDecoder(true);
      let buffered: Frame[] = [];
      const timer = setTimeout(() => {
        cleanup();
        socket.destroy();
        reject(new Error(`no handshake within ${timeoutMs} ms`));
      }, timeoutMs);
      const onData = (chunk: Buffer) => {
        try {
          buffered = buffered.concat(decoder.push(chunk));
        } catch (err) {
          cleanup();
          socket.destroy();
          reject(err as Error);
          return;
        }
        if (decoder.isSynced) {
          cleanup();
          resolve(new AgentClient(socket, decoder, buffered));
        }
      };
      const onError = (err: Error) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(new Error('connection closed during handshake'));
      };
      const cleanup = () => {
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
      };
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.on('connect', () => socket.write(MAGIC));
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Opens a stream for `op`. */
  open<O extends AgentOp>(op: O, args: OpRequest<O>, handlers: StreamHandlers<O> = {}): AgentStream<O> {
    const id = this.nextStream++;
    const stream = new AgentStream(this, id, op, handlers);
    if (this.closed) {
      stream.fail(new NsError('agent_unavailable', `agent ${op}: not connected`));
      return stream;
    }
    this.streams.set(id, stream);
    void this.send(FrameType.OPEN, id, Buffer.from(JSON.stringify({ op, ...args }))).catch((err: unknown) => stream.fail(err as Error));
    return stream;
  }

  /** A request without streamed data: OPEN, then wait for RESULT. */
  async call<O extends AgentOp>(op: O, ...[args, timeoutMs = 30_000]: OpArgs<O, [timeoutMs?: number]>): Promise<OpResult<O>> {
    // (args is left out only where {} is a whole request)
    const stream = this.open(op, args ?? ({} as OpRequest<O>));
    const timer = setTimeout(() => stream.cancel(`no answer within ${timeoutMs} ms`), timeoutMs);
    try {
      return await stream.result;
    } finally {
      clearTimeout(timer);
    }
  }

  /** @internal */
  send(type: number, stream: number, payload?: Buffer): Promise<void> {
    if (this.closed) return Promise.reject(new NsError('agent_unavailable', 'connection to the agent closed'));
    const ok = this.socket.write(encodeFrame(type, stream, payload));
    if (ok) return Promise.resolve();
    // wait for the buffer to drain, or for the session to end (the VM may be gone)
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        this.removeListener('close', onClose);
        resolve();
      };
      const onClose = () => {
        this.socket.removeListener('drain', onDrain);
        reject(new NsError('agent_unavailable', 'connection to the agent closed'));
      };
      this.socket.once('drain', onDrain);
      this.once('close', onClose);
    });
  }

  /** @internal */
  sendWindow(stream: number, bytes: number): Promise<void> {
    if (bytes <= 0 || this.closed) return Promise.resolve();
    const b = Buffer.alloc(4);
    b.writeUInt32BE(bytes, 0);
    return this.send(FrameType.WINDOW, stream, b).catch(() => {});
  }

  /** @internal */
  forget(id: number): void {
    this.streams.delete(id);
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  /** @internal Ends the session because the agent broke the protocol. */
  abort(reason: string): void {
    this.emit('protocol-error', reason);
    this.socket.destroy(new Error(reason));
  }
}
