import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { apiKey, apiUrl, sandbox } from './helpers.js';
import { waitForProcess } from './terminal.js';

// `nullspace sandbox shell` used the way a person uses it: in a terminal (tmux, on a server socket
// of its own), typing keys (send-keys) and reading the screen (capture-pane).

const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

class Tmux {
  readonly socket = `ns-shell-${randomBytes(4).toString('hex')}`;
  private tmux(...args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, ...args], { encoding: 'utf8' });
  }
  start(cmd: string, env: Record<string, string>, cols: number, rows: number): void {
    const envArgs = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
    this.tmux('new-session', '-d', '-x', String(cols), '-y', String(rows), ...envArgs, cmd);
    this.tmux('set-option', '-g', 'remain-on-exit', 'on');
    // the window follows the size asked for, not that of a client (there is none)
    this.tmux('set-option', '-g', 'window-size', 'manual');
  }
  keys(...keys: string[]): void {
    this.tmux('send-keys', '-t', '0', ...keys);
  }
  type(text: string): void {
    this.tmux('send-keys', '-t', '0', '-l', text);
  }
  screen(): string {
    return this.tmux('capture-pane', '-p', '-t', '0');
  }
  resize(cols: number, rows: number): void {
    this.tmux('resize-window', '-t', '0', '-x', String(cols), '-y', String(rows));
  }
  async waitFor(re: RegExp, timeoutMs = 60_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.screen();
      if (re.test(s)) return s;
      if (Date.now() > deadline) throw new Error(`the terminal never showed ${re}; it shows:\n${s}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  kill(): void {
    try {
      this.tmux('kill-server');
    } catch {
      // already gone
    }
  }
}

describe('nullspace sandbox shell', () => {
  it('is an interactive shell in a terminal: window size and resizes, Ctrl-C, the exit code, the terminal restored', async () => {
    const sbx = await sandbox();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-shell-'));
    const tmux = new Tmux();
    onTestFinished(() => {
      tmux.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const codeFile = path.join(dir, 'code');
    const sttyFile = path.join(dir, 'stty');
    // the CLI's exit code and the local terminal's mode after it are written where the test reads them
    tmux.start(
      `stty -g > ${dir}/before; node ${CLI} sandbox shell ${sbx.sandboxId}; echo $? > ${codeFile}; stty -g > ${sttyFile}; sleep 600`,
      { NULLSPACE_API_URL: apiUrl(), NULLSPACE_API_KEY: apiKey() },
      100,
      30,
    );
    await tmux.waitFor(/root@sbx_\w+:\/workspace# ?$/m); // (capture-pane drops trailing spaces)
    tmux.type('stty size');
    tmux.keys('Enter');
    await tmux.waitFor(/^30 100$/m);

    tmux.resize(120, 40);
    tmux.type('echo cols=$(tput cols) lines=$(tput lines)');
    tmux.keys('Enter');
    await tmux.waitFor(/^cols=120 lines=40$/m);

    tmux.type('sleep 100');
    tmux.keys('Enter');
    await waitForProcess(sbx, 'sleep');
    tmux.keys('C-c');
    tmux.type('echo status=$?');
    tmux.keys('Enter');
    await tmux.waitFor(/^status=130$/m);
    // Ctrl-C reached the guest, not the CLI: it still runs
    expect(fs.existsSync(codeFile)).toBe(false);

    tmux.type('exit 3');
    tmux.keys('Enter');
    for (let i = 0; !fs.existsSync(codeFile) || !fs.existsSync(sttyFile); i++) {
      if (i > 300) throw new Error(`the CLI did not end; the terminal shows:\n${tmux.screen()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(fs.readFileSync(codeFile, 'utf8').trim()).toBe('3');
    // the terminal's mode is what it was before the CLI put it in raw mode
    expect(fs.readFileSync(sttyFile, 'utf8')).toBe(fs.readFileSync(path.join(dir, 'before'), 'utf8'));
  });
});
