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

describe("the suite's closing lines (scripts/test-summary.mjs)", () => {
  /** A report dir as scripts/test.sh leaves it: four steps, each layer's counts, vitest's JSON. */
  function report(vitest: unknown): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-summary-'));
    onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
    const failed = (vitest as { numFailedTests: number }).numFailedTests > 0;
    fs.writeFileSync(path.join(dir, 'steps'), `typecheck\tok\ngo\tok\nsuite\t${failed ? 'FAILED' : 'ok'}\nleaks\tok\n`);
    fs.writeFileSync(path.join(dir, 'go.json'), `${JSON.stringify({ Action: 'pass', Package: 'p', Test: 'TestX' })}\n`);
    fs.writeFileSync(path.join(dir, 'python.json'), JSON.stringify({ passed: 1, failed: 0, skipped: 0 }));
    fs.writeFileSync(path.join(dir, 'vitest.json'), JSON.stringify(vitest));
    return dir;
  }

  it('name each failed test with the first lines of its failure next to the verdict (a CI log tail says why)', () => {
    const dir = report({
      numPassedTests: 2,
      numFailedTests: 1,
      numPendingTests: 0,
      testResults: [
        {
          name: path.join(repo, 'test/fleet.test.ts'),
          status: 'failed',
          assertionResults: [
            { status: 'passed', fullName: 'fleet places' },
            { status: 'failed', fullName: 'fleet a volume', failureMessages: ['\u001b[31mSandboxError: host h1 answered 500\u001b[39m\n    at Volume.create (volume.js:37:5)\n'] },
          ],
        },
        { name: path.join(repo, 'test/x.test.ts'), status: 'failed', message: 'Error: Hook timed out in 300000ms', assertionResults: [] },
      ],
    });
    const r = sh('node', ['scripts/test-summary.mjs', dir]);
    expect(r.code).toBe(1);
    const tail = r.stdout.slice(r.stdout.indexOf('failed tests'));
    expect(tail).toContain('test/fleet.test.ts > fleet a volume\n      SandboxError: host h1 answered 500\n          at Volume.create (volume.js:37:5)\n');
    expect(tail).toContain('test/x.test.ts\n      Error: Hook timed out in 300000ms\n');
    expect(tail).not.toContain('fleet places');
    expect(tail).not.toContain('\u001b[');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toMatch(/^tests: FAILED/);
  });

  it('a run where everything passed lists no failure and says passed', () => {
    const dir = report({ numPassedTests: 2, numFailedTests: 0, numPendingTests: 0, testResults: [{ name: path.join(repo, 'test/a.test.ts'), status: 'passed', assertionResults: [{ status: 'passed', fullName: 'a' }] }] });
    const r = sh('node', ['scripts/test-summary.mjs', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('failed tests');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('tests: passed');
  });
});
