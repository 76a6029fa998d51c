import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { apiKey, apiUrl } from './helpers.js';

const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, NULLSPACE_API_URL: apiUrl(), NULLSPACE_API_KEY: apiKey() },
    input,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('nullspace CLI', () => {
  it('creates, lists, runs commands, moves files and kills', () => {
    const created = cli(['sandbox', 'create', '--metadata', 'suite=cli-test', '--env', 'WHO=cli', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const id = (JSON.parse(created.stdout) as { sandboxId: string }).sandboxId;
    onTestFinished(() => {
      cli(['sandbox', 'kill', id]);
    });
    expect(id).toMatch(/^sbx_/);

    const list = cli(['sandbox', 'list', '--metadata', 'suite=cli-test', '--json']);
    expect((JSON.parse(list.stdout) as Array<{ sandboxId: string }>).map((s) => s.sandboxId)).toContain(id);
    expect(cli(['sandbox', 'list']).stdout).toContain(id);

    const exec = cli(['sandbox', 'exec', id, '--', 'echo hello $WHO; echo oops >&2; exit 4']);
    expect(exec).toMatchObject({ code: 4, stdout: 'hello cli\n', stderr: 'oops\n' });

    const w = cli(['files', 'write', id, '/workspace/from-cli.txt', '-'], 'piped content\n');
    expect(w.code, w.stderr).toBe(0);
    expect(cli(['files', 'read', id, '/workspace/from-cli.txt'])).toMatchObject({ code: 0, stdout: 'piped content\n' });

    const info = cli(['sandbox', 'info', id, '--json']);
    expect(JSON.parse(info.stdout)).toMatchObject({ sandboxId: id, state: 'running' });

    expect(cli(['sandbox', 'kill', id]).code).toBe(0);
    expect(JSON.parse(cli(['sandbox', 'info', id, '--json']).stdout)).toMatchObject({ state: 'killed' });
  });

  it('prints errors with their code and exits non-zero', () => {
    const r = cli(['sandbox', 'info', 'sbx_0000000000000000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[sandbox_not_found]');
    expect(cli(['files', 'read', 'sbx_0000000000000000', 'relative']).code).toBe(1);
  });

  it('lists templates', () => {
    const r = cli(['template', 'list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((t) => t.name)).toContain('base');
  });
});
