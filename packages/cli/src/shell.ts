import os from 'node:os';
import type { Sandbox } from 'nullspace';

/**
 * `nullspace sandbox shell`: the local terminal becomes a terminal of the sandbox. Raw mode (every
 * key, Ctrl-C included, goes to the guest), the window size at start and on every SIGWINCH, the
 * output written as it comes. Resolves with the shell's exit code (128 + the signal number when a
 * signal ended it); the local terminal is restored on every way out (end, error, signal, exit).
 */
export async function runShell(sbx: Sandbox, opts: { cmd?: string; cwd?: string; user?: string } = {}): Promise<number> {
  const { stdin, stdout } = process;
  const size = () => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  let raw = false;
  const restore = () => {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
    raw = false;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    restore();
    process.exit(128 + (os.constants.signals[sig] ?? 0));
  };
  process.once('exit', restore);
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.once(sig, onSignal);

  const h = await sbx.pty.create({ ...size(), ...opts, onData: (d) => stdout.write(d) });
  // keys typed while a request is under way go together in the next one, in order
  const queued: Buffer[] = [];
  let sending = false;
  const pump = async () => {
    if (sending) return;
    sending = true;
    try {
      while (queued.length) await h.sendInput(Buffer.concat(queued.splice(0))).catch(() => {});
    } finally {
      sending = false;
    }
  };
  const onInput = (d: Buffer) => {
    queued.push(d);
    void pump();
  };
  const onResize = () => void h.resize(size()).catch(() => {});
  try {
    if (stdin.isTTY) {
      stdin.setRawMode(true);
      raw = true;
    }
    stdin.on('data', onInput);
    stdin.resume();
    stdout.on('resize', onResize);
    const code = await h.wait();
    return code >= 0 ? code : 128 + ((h.signal && os.constants.signals[h.signal as NodeJS.Signals]) || 0);
  } finally {
    stdout.off('resize', onResize);
    stdin.off('data', onInput);
    stdin.pause();
    restore();
    process.off('exit', restore);
    for (const sig of ['SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.off(sig, onSignal);
  }
}
