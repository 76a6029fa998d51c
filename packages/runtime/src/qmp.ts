import { EventEmitter } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { NsError } from './errors.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * A client of QEMU's machine protocol over its unix socket: one JSON document per line, commands
 * matched to answers by `id`, asynchronous events emitted as 'event'. 'close' is emitted once when
 * the connection ends (QEMU quit or died); pending commands then fail with `vm_exited`.
 */
export class QmpClient extends EventEmitter {
  private socket: net.Socket;
  private buffer = '';
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private closedErr: NsError | undefined;
  private greeting: Promise<void>;
  readonly version: { major: number; minor: number; micro: number } = { major: 0, minor: 0, micro: 0 };

  private constructor(socket: net.Socket) {
    super();
    this.socket = socket;
    let resolveGreeting!: () => void;
    let rejectGreeting!: (err: Error) => void;
    this.greeting = new Promise((res, rej) => {
      resolveGreeting = res;
      rejectGreeting = rej;
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ('QMP' in msg) {
          const v = (msg.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } }).version?.qemu;
          if (v) Object.assign(this.version, v);
          resolveGreeting();
        } else if ('event' in msg) {
          this.emit('event', msg as unknown as QmpEvent);
        } else if ('id' in msg) {
          const id = String(msg.id);
          const p = this.pending.get(id);
          if (!p) continue;
          this.pending.delete(id);
          if ('error' in msg) {
            const e = msg.error as { class?: string; desc?: string };
            p.reject(new NsError('qmp_error', `qmp ${p.command}: ${e.desc ?? 'unknown error'} (${e.class ?? 'Error'})`, {
              details: { qmpClass: e.class },
            }));
          } else {
            p.resolve(msg.return);
          }
        }
      }
    });
    const onEnd = (err?: Error) => {
      if (this.closedErr) return;
      this.closedErr = new NsError('vm_exited', `qmp connection closed${err ? `: ${err.message}` : ''}`);
      rejectGreeting(this.closedErr);
      for (const p of this.pending.values()) p.reject(new NsError('vm_exited', `qmp ${p.command}: ${this.closedErr.message}`));
      this.pending.clear();
      this.emit('close');
    };
    socket.on('error', onEnd);
    socket.on('close', () => onEnd());
  }

  /**
   * Connects to a QMP socket, retrying while QEMU has not created it yet, until `timeoutMs`.
   * `isAlive` lets the caller stop early when the QEMU process is already gone.
   */
  static async connect(path: string, opts: { timeoutMs?: number; isAlive?: () => boolean } = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let lastErr: unknown;
    for (let attempt = 0; ; attempt++) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection({ path });
          s.once('connect', () => {
            s.removeListener('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        const greetTimer = setTimeout(() => socket.destroy(new Error('no QMP greeting')), Math.max(1000, deadline - Date.now()));
        try {
          await client.greeting;
        } finally {
          clearTimeout(greetTimer);
        }
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        lastErr = err;
      }
      if (Date.now() > deadline || (opts.isAlive && !opts.isAlive())) break;
      await sleep(Math.min(2 + attempt * 2, 25));
    }
    throw new NsError('vm_start_failed', `connecting to qmp socket ${path}: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`);
  }

  get closed(): boolean {
    return this.closedErr !== undefined;
  }

  /** Runs a QMP command; a QEMU that does not answer within `timeoutMs` is reported, not waited for forever. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 60_000): Promise<T> {
    if (this.closedErr) return Promise.reject(new NsError('vm_exited', `qmp ${command}: ${this.closedErr.message}`));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new NsError('timeout', `qmp ${command}: QEMU did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Resolves with the first event named `name` that satisfies `match`, or rejects after `timeoutMs`. */
  waitEvent(name: string | string[], timeoutMs: number, match: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    const names = Array.isArray(name) ? name : [name];
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (names.includes(e.event) && match(e)) {
          cleanup();
          resolve(e);
        }
      };
      const onClose = () => {
        cleanup();
        reject(new NsError('vm_exited', `waiting for qmp event ${name}: qmp connection closed`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new NsError('timeout', `waiting for qmp event ${name}: no event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.removeListener('event', onEvent);
        this.removeListener('close', onClose);
      };
      this.on('event', onEvent);
      this.once('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
