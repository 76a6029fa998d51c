import { randomBytes } from 'node:crypto';

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

export const SANDBOX_ID_RE = /^sbx_[0-9a-z]{16}$/;

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
