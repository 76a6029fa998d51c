import { randomBytes } from 'node:crypto';
import { NsError } from '@nullspace/runtime';

/** Serializes async operations per key (one lifecycle operation at a time per sandbox). */
export class KeyedMutex {
  private tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Resolves once no operation holds or waits for any key, or after `timeoutMs`. */
  async idle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.tails.size && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.tails.values()]), new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))))]);
      clearTimeout(timer);
    }
  }

  /** True while an operation holds or waits for `key`. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }
}

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** `prefix_` + 16 random lowercase alphanumerics (~82 bits). */
export function newId(prefix: string): string {
  const bytes = randomBytes(16);
  let s = '';
  for (const b of bytes) s += ALPHABET[b % 36];
  return `${prefix}_${s}`;
}

/** Every item of a paged list (`page(token)`: one page and the next page's token), in order. */
export async function allPages<T>(page: (nextToken: string | undefined) => Promise<{ items: T[]; nextToken?: string | null | undefined }>): Promise<T[]> {
  const out: T[] = [];
  let token: string | undefined;
  do {
    const p = await page(token);
    out.push(...p.items);
    token = p.nextToken ?? undefined;
  } while (token);
  return out;
}

/**
 * A readers-writer lock: many readers at once, one writer alone. Snapshot captures and restores
 * read the layer store; the garbage collector writes it.
 */
export class RwLock {
  private readers = 0;
  private writer = false;
  private queue: Array<{ write: boolean; wake: () => void }> = [];

  private pump(): void {
    while (this.queue.length) {
      const next = this.queue[0]!;
      if (next.write ? this.writer || this.readers > 0 : this.writer) return;
      this.queue.shift();
      if (next.write) this.writer = true;
      else this.readers++;
      next.wake();
    }
  }

  private acquire(write: boolean): Promise<void> {
    return new Promise((wake) => {
      this.queue.push({ write, wake });
      this.pump();
    });
  }

  async read<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquireRead();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Takes the read side; the returned function releases it (once, whatever the number of calls). */
  async acquireRead(): Promise<() => void> {
    await this.acquire(false);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.readers--;
      this.pump();
    };
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.pump();
    }
  }
}

/**
 * Keeps short operations and exclusive phases of one key apart, phases first: `close` makes new
 * `enter` calls wait and waits (at most `drainMs`) for those already inside to leave; `open` lets
 * the waiting ones in. A sandbox's captures close its gate: process starts, and the file work of a
 * sandbox with volumes, enter it (a frozen cgroup refuses new processes, an unmounted volume would
 * take writes on the root disk).
 */
export class KeyedGate {
  private readonly gates = new Map<string, { inside: number; closed?: Promise<void>; reopen?: () => void; drained?: () => void }>();

  /** Waits while `key` is closed, then counts an operation in; the returned function counts it out (once). */
  async enter(key: string): Promise<() => void> {
    for (let g = this.gates.get(key); g?.closed; g = this.gates.get(key)) await g.closed;
    const g = this.gates.get(key) ?? { inside: 0 };
    this.gates.set(key, g);
    g.inside++;
    let inside = true;
    return () => {
      if (!inside) return;
      inside = false;
      g.inside--;
      if (g.inside > 0) return;
      g.drained?.();
      if (!g.closed) this.gates.delete(key);
    };
  }

  /**
   * Closes `key` and resolves once nothing is inside (true) or after `drainMs` (false); either way
   * the caller must `open` it again. One phase at a time per key (its callers hold the key's lock).
   */
  async close(key: string, drainMs: number): Promise<boolean> {
    const g = this.gates.get(key) ?? { inside: 0 };
    this.gates.set(key, g);
    if (g.closed) throw new Error(`gate ${key} is already closed`);
    g.closed = new Promise<void>((resolve) => (g.reopen = resolve));
    if (g.inside === 0) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        g.drained = undefined;
        resolve(false);
      }, drainMs);
      g.drained = () => {
        clearTimeout(timer);
        g.drained = undefined;
        resolve(true);
      };
    });
  }

  open(key: string): void {
    const g = this.gates.get(key);
    if (!g?.closed) return;
    const reopen = g.reopen;
    g.closed = undefined;
    g.reopen = undefined;
    g.drained = undefined;
    if (g.inside === 0) this.gates.delete(key);
    reopen?.();
  }
}

/**
 * The chunks of `source`, ended with 408 `request_timeout` when the next one takes longer than
 * `idleMs` to come: an inactivity limit for a request body that may take any time as a whole. Only
 * the waits for the source count, not the time its consumer takes between chunks. The error is
 * also kept in `stalled` (for a consumer that reports its own error instead).
 */
export class UntilIdle<T> implements AsyncIterable<T> {
  stalled: NsError | undefined;
  private ended = false;
  private readonly it: AsyncIterator<T>;

  constructor(
    source: AsyncIterable<T>,
    private readonly idleMs: number,
  ) {
    this.it = source[Symbol.asyncIterator]();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.stalled = new NsError('request_timeout', `the request body stalled: nothing arrived for ${this.idleMs} ms`, { details: { limitMs: this.idleMs } });
          reject(this.stalled);
        }, this.idleMs);
      });
      let next: IteratorResult<T>;
      try {
        next = await Promise.race([this.it.next(), idle]);
      } finally {
        clearTimeout(timer);
      }
      if (next.done) {
        this.ended = true;
        return;
      }
      yield next.value;
    }
  }

  /**
   * Once the consumer is done: what it left of the source (a body half written when the write
   * failed) is read and dropped, as Node does with a body nobody reads, so that the connection's
   * next request comes after it (left half read on a connection kept alive, the next request was
   * taken for body and never answered). A stalled source is left as it is, for the answer (408) to
   * go out: its read ends with the connection.
   */
  finish(): void {
    if (!this.ended && !this.stalled) void drain(this.it);
  }
}

async function drain<T>(it: AsyncIterator<T>): Promise<void> {
  try {
    while (!(await it.next()).done);
  } catch {
    // (the connection ended)
  }
}
