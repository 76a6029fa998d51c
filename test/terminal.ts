import xterm from '@xterm/headless';
import type { Sandbox } from 'nullspace';

/**
 * A terminal emulator (xterm.js, headless) fed with a sandbox terminal's output: what a person would
 * see on the screen.
 */
export class Screen {
  readonly term: xterm.Terminal;
  private pending: Promise<void> = Promise.resolve();

  constructor(cols = 80, rows = 24) {
    this.term = new xterm.Terminal({ cols, rows, allowProposedApi: true, scrollback: 1000 });
  }

  /** The onData callback of a terminal. */
  readonly feed = (data: Uint8Array): void => {
    const chunk = Uint8Array.from(data);
    this.pending = this.pending.then(() => new Promise<void>((resolve) => this.term.write(chunk, resolve)));
  };

  resize(cols: number, rows: number): void {
    this.term.resize(cols, rows);
  }

  /** The visible screen, one line of text per row (trailing spaces removed). */
  async text(): Promise<string> {
    await this.pending;
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < this.term.rows; y++) lines.push(buf.getLine(buf.viewportY + y)?.translateToString(true) ?? '');
    return lines.join('\n');
  }

  /** Scrollback and screen. */
  async all(): Promise<string> {
    await this.pending;
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < buf.length; y++) lines.push(buf.getLine(y)?.translateToString(true) ?? '');
    return lines.join('\n');
  }

  /** Waits until the screen (or, with `everything`, the scrollback too) matches `re`. */
  async waitFor(re: RegExp, { timeoutMs = 60_000, everything = false } = {}): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = everything ? await this.all() : await this.text();
      const m = text.match(re);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`the screen never showed ${re}; it shows:\n${text}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Waits until a process named `name` runs in the sandbox (e.g. a job typed into a terminal). */
export async function waitForProcess(sbx: Sandbox, name: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await sbx.commands.run(`pgrep -x ${name} || true`)).stdout.trim() === '') {
    if (Date.now() > deadline) throw new Error(`no process ${name} started`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
