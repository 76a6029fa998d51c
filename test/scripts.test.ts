import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { apiKey, apiUrl } from './helpers.js';
import { TEST_ROOT } from './env.js';
import { cleanupDataDir, freePort, qemuPid, serverProcess } from './servers.js';

const repo = path.resolve(__dirname, '..');
const CLAIMS = path.join(process.env.NULLSPACE_RUN_DIR ?? '/run/nullspace', 'vm-uids');

function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? repo, env: opts.env ?? process.env, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
}

/** A directory of fake `node` / `npm` executables that print the given versions (undefined: absent). */
function fakeTools(versions: { node?: string; npm?: string }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-fake-node-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, v] of Object.entries(versions)) {
    fs.writeFileSync(path.join(dir, name), `#!/bin/sh\necho ${v}\n`, { mode: 0o755 });
  }
  // only the fakes and what the script itself needs (no real node/npm on this PATH)
  for (const tool of ['bash', 'sed', 'env', 'cat']) {
    const real = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (real && !fs.existsSync(path.join(dir, tool))) fs.symlinkSync(real, path.join(dir, tool));
  }
  return dir;
}

describe('a fresh host', () => {
  it('setup checks Node.js and npm first and says what is needed (Debian 12 ships Node 18)', () => {
    const check = (versions: { node?: string; npm?: string }) =>
      sh('bash', ['scripts/check-node.sh'], { env: { PATH: fakeTools(versions) } });
    const old = check({ node: 'v18.19.0', npm: '9.2.0' });
    expect(old.code).toBe(1);
    expect(old.out).toContain('needs Node.js >= 20; found v18.19.0');
    expect(old.out).toMatch(/nodesource|nodejs\.org/);
    const none = check({});
    expect(none.code).toBe(1);
    expect(none.out).toContain('no `node` is on PATH');
    const noNpm = check({ node: 'v20.11.0' });
    expect(noNpm.code).toBe(1);
    expect(noNpm.out).toContain('npm');
    const oldNpm = check({ node: 'v22.1.0', npm: '8.19.4' });
    expect(oldNpm.code).toBe(1);
    expect(oldNpm.out).toContain('npm >= 9; found 8.19.4');
    expect(check({ node: 'v20.11.0', npm: '10.2.4' })).toMatchObject({ code: 0, out: '' });
    // and setup.sh runs it before it installs or builds anything
    const setup = fs.readFileSync(path.join(repo, 'scripts/setup.sh'), 'utf8');
    expect(setup.indexOf('scripts/check-node.sh')).toBeGreaterThan(0);
    expect(setup.indexOf('scripts/check-node.sh')).toBeLessThan(setup.indexOf('apt-get'));
  });

  it('`npx nullspace` from the repository root is the CLI (as the README says)', () => {
    const help = sh('npx', ['--no-install', 'nullspace', '--help']);
    expect(help.code, help.out).toBe(0);
    expect(help.stdout).toContain('Usage: nullspace');
    const list = sh('npx', ['--no-install', 'nullspace', 'template', 'list', '--json'], {
      env: { ...process.env, NULLSPACE_API_URL: apiUrl(), NULLSPACE_API_KEY: apiKey() },
    });
    expect(list.code, list.out).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ name: string }>).map((t) => t.name)).toContain('base');
    expect(fs.readFileSync(path.join(repo, 'README.md'), 'utf8')).toContain('npx nullspace');
  });
});

describe('leak check and clearing (scripts/leaks.sh)', () => {
  it('see and clear only what runs in their area made: a server beside the run and its sandbox are neither reported nor touched', async () => {
    // beside the run: a server on a data dir outside the test area (as a serve.sh would be), with a sandbox
    const home = path.dirname(TEST_ROOT);
    const beside = path.join(home, `bx-${randomBytes(3).toString('hex')}`);
    cleanupDataDir(beside);
    const key = `beside-${randomBytes(12).toString('hex')}`;
    const { url } = await serverProcess(beside, key, freePort(), { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const sbx = await Sandbox.create({ apiUrl: url, apiKey: key });
    onTestFinished(() => sbx.kill().catch(() => {}));
    const besidePid = qemuPid(sbx.sandboxId)!;
    expect(besidePid).toBeGreaterThan(0);
    const besideClaims = () => fs.readdirSync(CLAIMS).filter((f) => fs.readFileSync(path.join(CLAIMS, f), 'utf8').startsWith(`${beside} `));
    expect(besideClaims().length).toBe(1);

    // the area of an interrupted run: a process that names a path under it, a uid claim of one of its data dirs, a data dir
    const area = path.join(TEST_ROOT, `area-${randomBytes(3).toString('hex')}`);
    const dead = path.join(area, 's-dead');
    fs.mkdirSync(path.join(dead, 'sandboxes'), { recursive: true });
    onTestFinished(() => fs.rmSync(area, { recursive: true, force: true }));
    const fake = spawn('bash', ['-c', `exec -a "qemu-system-x86_64 -name nullspace-sbx_0000000000000000 mem-path=${dead}/sandboxes/x/mem" sleep 600`], { stdio: 'ignore' });
    onTestFinished(() => {
      if (fake.exitCode === null && fake.signalCode === null) fake.kill('SIGKILL');
    });
    const claim = path.join(CLAIMS, String(3_999_000 + Math.floor(Math.random() * 900)));
    fs.writeFileSync(claim, `${dead} sbx_0000000000000000`, { flag: 'wx', mode: 0o600 });
    onTestFinished(() => fs.rmSync(claim, { force: true }));
    await new Promise((r) => setTimeout(r, 100)); // the exec has happened

    // (not spawnSync: a blocked event loop lets the SDK reuse a keep-alive connection the server closed meanwhile)
    const leaks = (cmd: string) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        execFile('bash', ['scripts/leaks.sh', cmd, area], { cwd: repo, encoding: 'utf8' }, (err, stdout, stderr) => {
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
        });
      });
    const found = await leaks('check');
    expect(found.code).toBe(1);
    expect(found.out).toContain(`process ${fake.pid} still runs`);
    expect(found.out).toContain(`sandbox uid claim left: ${claim}`);
    expect(found.out).toContain('data dirs left');
    expect(found.out).not.toContain(beside);
    expect(found.out).not.toContain(String(besidePid));

    expect((await leaks('clear')).code).toBe(0);
    await new Promise((r) => fake.exitCode !== null || fake.signalCode !== null ? r(null) : fake.once('exit', r));
    expect(fake.signalCode).toBe('SIGKILL');
    expect(fs.existsSync(claim)).toBe(false);
    expect(fs.readdirSync(area)).toEqual([]);
    expect(await leaks('check')).toMatchObject({ code: 0, out: '' });

    // the server beside is untouched
    expect(qemuPid(sbx.sandboxId)).toBe(besidePid);
    expect(besideClaims().length).toBe(1);
    expect((await sbx.commands.run('echo still here')).stdout).toBe('still here\n');
    await sbx.kill();
  });
});
