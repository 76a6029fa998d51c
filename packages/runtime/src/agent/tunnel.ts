import { Duplex } from 'node:stream';
import { NsError } from '../errors.js';
import type { AgentClient, AgentStream } from './client.js';

/** What a tunnel needs of an agent session (the AgentClient, or a fake). */
export type TunnelAgent = Pick<AgentClient, 'open'>;

export interface TunnelOptions {
  /** The guest address to connect to (default 127.0.0.1: the guest's loopback). */
  host?: string;
  /** How long the guest may take to connect (default 5000 ms; then port_not_open). */
  connectTimeoutMs?: number;
}

/**
 * A TCP connection inside the guest as a Node Duplex, over one agent stream (`net.connect`,
 * spec/agent.json): what is written goes to the guest's server as DATA within the agent's credit
 * (a write completes once the agent took it: backpressure end to end), what the server sends is
 * read with the stream's flow control (the agent gets credit back only as this side is read), the
 * end of writing half-closes the guest connection, the guest side's end of data is the end of
 * reading, destroy() closes it. It has the few socket methods Node's HTTP client calls, so that an
 * http.Agent's createConnection can hand it out.
 */
export class TunnelSocket extends Duplex {
  /** Set once the guest side's connection is open. */
  private stream: AgentStream<'net.connect'> | undefined;
  private waiting: Array<() => void> = [];
  private idleMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Bytes carried each way (for the benchmark and logs). */
  bytesRead = 0;
  bytesWritten = 0;

  constructor() {
    super({ allowHalfOpen: true });
  }

  /** @internal */
  attach(stream: AgentStream<'net.connect'>): void {
    this.stream = stream;
  }

  /** @internal: a chunk from the guest; resolves when the reader wants more (credit goes back then). */
  feed(chunk: Buffer): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.bytesRead += chunk.length;
    this.activity();
    if (this.push(chunk)) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }

  override _read(): void {
    this.wake();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const stream = this.stream;
    if (!stream) return cb(new NsError('port_not_open', 'the tunnel is not connected'));
    this.bytesWritten += chunk.length;
    this.activity();
    stream.write(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.stream?.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.idleTimer);
    this.wake();
    if (this.stream && !this.stream.done) this.stream.cancel('the tunnel was closed');
    cb(err);
  }

  // What Node's HTTP client and http.Agent call on a socket.
  setTimeout(ms: number, cb?: () => void): this {
    this.idleMs = ms;
    if (cb) this.once('timeout', cb);
    this.activity();
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  private activity(): void {
    clearTimeout(this.idleTimer);
    if (this.idleMs > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => this.emit('timeout'), this.idleMs);
      this.idleTimer.unref();
    }
  }
}

/**
 * Opens a TCP connection to `port` inside the guest. Resolves once it is open; rejects with the
 * agent's error (`port_not_open` when nothing listens there).
 */
export function openTunnel(agent: TunnelAgent, port: number, opts: TunnelOptions = {}): Promise<TunnelSocket> {
  const sock = new TunnelSocket();
  return new Promise((resolve, reject) => {
    let open = false;
    const stream = agent.open(
      'net.connect',
      { port, ...(opts.host !== undefined ? { host: opts.host } : {}), ...(opts.connectTimeoutMs !== undefined ? { timeoutMs: opts.connectTimeoutMs } : {}) },
      {
        onEvent: (ev) => {
          if (ev.type === 'connected' && !open) {
            open = true;
            resolve(sock);
          } else if (ev.type === 'eof') {
            // (after the data before it: DATA is handed out in order, events at once)
            void stream.delivered().then(() => {
              if (!sock.readableEnded && !sock.destroyed) sock.push(null);
            });
          }
        },
        onData: (_channel, chunk) => sock.feed(chunk),
      },
    );
    sock.attach(stream);
    stream.result.then(
      () => {
        // both directions ended (the eof event came first; the result comes after the data)
        if (!sock.readableEnded && !sock.destroyed) sock.push(null);
      },
      (err: unknown) => {
        if (!open) {
          sock.destroy();
          reject(err as Error);
        } else {
          sock.destroy(err as Error);
        }
      },
    );
  });
}
