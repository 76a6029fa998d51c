import { describe, expect, it } from 'vitest';
import type { FilesystemEvent, Sandbox, SandboxError, WatchHandle } from 'nullspace';
import { sandbox } from './helpers.js';

/** The events of a watch, and a wait for one. */
class Events {
  readonly seen: FilesystemEvent[] = [];
  readonly on = (e: FilesystemEvent): void => {
    this.seen.push(e);
  };
  async waitFor(type: FilesystemEvent['type'], name: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.seen.some((e) => e.type === type && e.name === name)) {
      if (Date.now() > deadline) throw new Error(`no ${type} event for ${name}; seen: ${JSON.stringify(this.seen)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function watch(sbx: Sandbox, path: string, recursive = false): Promise<{ ev: Events; handle: WatchHandle }> {
  const ev = new Events();
  const handle = await sbx.files.watchDir(path, ev.on, { recursive });
  return { ev, handle };
}

describe('watching files', () => {
  it('reports what guest processes and the API do in a directory: create, write, chmod, rename, remove', async () => {
    const sbx = await sandbox();
    await sbx.files.makeDir('/workspace/w/sub');
    const { ev, handle } = await watch(sbx, '/workspace/w');
    try {
      // a guest process
      await sbx.commands.run('echo hi > /workspace/w/by-guest.txt && chmod 600 /workspace/w/by-guest.txt');
      await ev.waitFor('create', 'by-guest.txt');
      await ev.waitFor('write', 'by-guest.txt');
      await ev.waitFor('chmod', 'by-guest.txt');
      // the API (a write lands through a temporary file renamed over the target)
      await sbx.files.write('/workspace/w/by-api.txt', 'data');
      await ev.waitFor('create', 'by-api.txt');
      await sbx.files.rename('/workspace/w/by-api.txt', '/workspace/w/renamed.txt');
      await ev.waitFor('rename', 'by-api.txt');
      await ev.waitFor('create', 'renamed.txt');
      await sbx.files.remove('/workspace/w/renamed.txt');
      await ev.waitFor('remove', 'renamed.txt');
      // not recursive: a file in a subdirectory is not reported
      await sbx.commands.run('touch /workspace/w/sub/deep && touch /workspace/w/last');
      await ev.waitFor('create', 'last');
      expect(ev.seen.filter((e) => e.name.includes('deep'))).toEqual([]);
    } finally {
      await handle.stop();
    }
    await expect(handle.wait()).resolves.toBeUndefined();
  });

  it('follows new subdirectories when recursive', async () => {
    const sbx = await sandbox();
    await sbx.files.makeDir('/workspace/r');
    const { ev, handle } = await watch(sbx, '/workspace/r', true);
    try {
      await sbx.commands.run('mkdir -p /workspace/r/a/b && echo x > /workspace/r/a/b/f.txt');
      await ev.waitFor('create', 'a');
      await ev.waitFor('create', 'a/b/f.txt');
      await sbx.files.write('/workspace/r/a/b/g.txt', 'y');
      await ev.waitFor('create', 'a/b/g.txt');
    } finally {
      await handle.stop();
    }
  });

  it('refuses a missing path or a file with clear codes, and ends when the sandbox is killed', async () => {
    const sbx = await sandbox();
    await expect(sbx.files.watchDir('/nope', () => {})).rejects.toMatchObject({ code: 'file_not_found', status: 404 });
    await expect(sbx.files.watchDir('/etc/hostname', () => {})).rejects.toMatchObject({ code: 'not_a_directory', status: 409 });
    await expect(sbx.files.watchDir('relative', () => {})).rejects.toMatchObject({ status: 400 });

    let exited: SandboxError | undefined | 'not yet' = 'not yet';
    const handle = await sbx.files.watchDir('/workspace', () => {}, { onExit: (err) => (exited = err) });
    await sbx.kill();
    await expect(handle.wait()).rejects.toMatchObject({ code: 'sandbox_not_running' });
    expect(exited).toMatchObject({ code: 'sandbox_not_running' });
  });
});
