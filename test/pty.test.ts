import { describe, expect, it } from 'vitest';
import { Sandbox } from 'nullspace';
import { api, conn, sandbox } from './helpers.js';
import { Screen, waitForProcess } from './terminal.js';

// Terminals on real VMs, read back the way a person sees them: the output goes through a terminal
// emulator (xterm.js) and the tests look at its screen.

describe('terminals', () => {
  it('runs the login shell on a terminal: typed input, programs drawing the screen (nano, vi with job control, top), the exit code', async () => {
    const sbx = await sandbox();
    const screen = new Screen(100, 30);
    const h = await sbx.pty.create({ cols: 100, rows: 30, onData: screen.feed });
    try {
      expect(h.pid).toBeGreaterThan(0);
      await h.sendInput('echo hi-$((6*7)) $TERM $(tty)\n');
      await screen.waitFor(/^hi-42 xterm-256color \/dev\/pts\/\d+$/m);

      // nano: a full-screen editor; what is typed shows, Ctrl-X asks to save, the file is written
      await h.sendInput('nano /tmp/note.txt\n');
      await screen.waitFor(/GNU nano/);
      await screen.waitFor(/\^X Exit/);
      await h.sendInput('typed in nano');
      await screen.waitFor(/^typed in nano$/m);
      await h.sendInput('\x18'); // Ctrl-X
      await screen.waitFor(/Save modified buffer\?/);
      await h.sendInput('y');
      await screen.waitFor(/File Name to Write: \/tmp\/note\.txt/);
      await h.sendInput('\r');
      await screen.waitFor(/^root@\S+:\S+# $/m);
      expect(await sbx.files.read('/tmp/note.txt')).toBe('typed in nano\n');

      // vi (vim-tiny): insert mode, Ctrl-Z stops it (job control: the shell's prompt), fg brings it
      // back, :wq writes the file
      await h.sendInput('clear; vi /tmp/vim.txt\n');
      await screen.waitFor(/^~\s*$/m);
      await h.sendInput('ityped in vim\x1b');
      await screen.waitFor(/^typed in vim\s*$/m);
      await h.sendInput('\x1a'); // Ctrl-Z
      await screen.waitFor(/Stopped\s+vi \/tmp\/vim\.txt/);
      await h.sendInput('fg\n');
      await screen.waitFor(/^typed in vim\s*$/m);
      await h.sendInput(':wq\r');
      await screen.waitFor(/^root@\S+:\S+# $/m);
      expect(await sbx.files.read('/tmp/vim.txt')).toBe('typed in vim\n');

      // top: its header and process table on the screen; q quits
      await h.sendInput('clear; top -d 1\n');
      await screen.waitFor(/Tasks: +\d+ total/);
      await screen.waitFor(/PID USER +PR +NI/);
      await h.sendInput('q');
      await screen.waitFor(/^root@\S+:\S+# $/m);

      await h.sendInput('exit 3\n');
      expect(await h.wait()).toBe(3);
    } finally {
      await h.kill();
    }
  });

  it('passes a resize on to the programs (tput cols) and Ctrl-C to the foreground job', async () => {
    const sbx = await sandbox();
    const screen = new Screen(80, 24);
    const h = await sbx.pty.create({ onData: screen.feed });
    try {
      await h.sendInput('stty size\n');
      await screen.waitFor(/^24 80$/m);
      // as a terminal window does: the emulator first, then the programs are told
      screen.resize(123, 37);
      await sbx.pty.resize(h.pid, { cols: 123, rows: 37 });
      await h.sendInput('echo cols=$(tput cols) lines=$(tput lines)\n');
      await screen.waitFor(/^cols=123 lines=37$/m);

      await h.sendInput('sleep 100\n');
      await waitForProcess(sbx, 'sleep');
      await h.sendInput('\x03'); // Ctrl-C
      await h.sendInput('echo status=$?\n');
      await screen.waitFor(/^status=130$/m);
      expect((await sbx.commands.run('pgrep -x sleep || echo none')).stdout.trim()).toBe('none');

      // the API's errors: a process without a terminal, bad sizes
      const bg = await sbx.commands.run('sleep 30', { background: true });
      const r = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/pty/${bg.pid}/resize`, { cols: 10, rows: 10 });
      expect(r.status).toBe(400);
      expect((await api('POST', `/v1/sandboxes/${sbx.sandboxId}/pty/${h.pid}/resize`, { cols: 0, rows: 10 })).status).toBe(400);
      expect(((await (await api('POST', `/v1/sandboxes/${sbx.sandboxId}/pty/99999/input`, { data: 'eA==' })).json()) as { error: { code: string } }).error.code).toBe('process_not_found');
    } finally {
      await h.kill();
    }
    expect(await h.wait()).toBe(-1);
    expect(await sbx.pty.kill(h.pid)).toBe(false);
  });

  it('reattaches after the client left: what the terminal printed meanwhile is replayed', async () => {
    const sbx = await sandbox();
    const first = new Screen();
    const h = await sbx.pty.create({ onData: first.feed });
    try {
      await h.sendInput('echo before-$((1+1))\n');
      await first.waitFor(/^before-2$/m);
      await h.disconnect();
      await expect(h.wait()).rejects.toMatchObject({ code: 'stream_ended' });

      // typed while nobody follows the terminal
      await sbx.pty.sendInput(h.pid, 'echo meanwhile-$((2+2)); touch /tmp/done\n');
      for (let i = 0; !(await sbx.files.exists('/tmp/done')); i++) {
        if (i > 300) throw new Error('the command typed while disconnected never ran');
        await new Promise((r) => setTimeout(r, 200));
      }
      const second = new Screen();
      const again = await sbx.pty.connect(h.pid, { onData: second.feed });
      await second.waitFor(/^before-2$[\s\S]*^meanwhile-4$/m);
      await again.sendInput('exit 7\n');
      expect(await again.wait()).toBe(7);
    } finally {
      await sbx.pty.kill(h.pid);
    }
  });

  it('a fork child has the terminal too, its own copy: a client attaches to it there', async () => {
    const s = await sandbox();
    const screen = new Screen();
    const h = await s.pty.create({ onData: screen.feed });
    try {
      await h.sendInput('X=from-parent-$((2*21)); echo ready\n');
      await screen.waitFor(/^ready$/m);
      const child = await s.fork();
      try {
        const cs = new Screen();
        const ch = await child.pty.connect(h.pid, { onData: cs.feed });
        await ch.sendInput('echo "$X in $(hostname)"\n');
        await cs.waitFor(new RegExp(`^from-parent-42 in ${child.sandboxId}$`, 'm'));
        await ch.sendInput('exit 5\n');
        expect(await ch.wait()).toBe(5);
      } finally {
        await child.kill();
      }
      // the parent's terminal is its own, still running
      await h.sendInput('echo "$X in $(hostname)"\n');
      await screen.waitFor(new RegExp(`^from-parent-42 in ${s.sandboxId}$`, 'm'));
    } finally {
      await h.kill();
    }
  });

  it('keeps a terminal across hibernate and resume; the client reattaches', async () => {
    const s = await sandbox();
    const screen = new Screen();
    const h = await s.pty.create({ onData: screen.feed });
    await h.sendInput('cd /tmp && X=kept-$((3*3))\n');
    await h.sendInput('echo set\n');
    await screen.waitFor(/^set$/m);
    const hib = await s.hibernate();
    // the stream ends with the VM: the caller is told why
    await expect(h.wait()).rejects.toMatchObject({ code: 'agent_unavailable' });
    const resumed = await Sandbox.resume(hib.id, conn());
    const after = new Screen();
    const again = await resumed.pty.connect(h.pid, { onData: after.feed });
    try {
      await again.sendInput('echo $X in $PWD\n');
      await after.waitFor(/^kept-9 in \/tmp$/m);
    } finally {
      await again.kill();
    }
    expect(await again.wait()).toBe(-1);
  });
});
