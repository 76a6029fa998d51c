import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { body, json, startFakeServer, TEMPLATE_VIEW, type FakeServer } from '../../sdk/test/fake-server.js';

/**
 * `nullspace template build --file / list / get / delete` against a fake server (the CLI goes
 * through the TypeScript SDK): what the server receives, the log on stderr, the result on stdout,
 * exit code 1 with the error's code. The built-in recipe build (`template build base`) runs in the
 * suite's set-up.
 */

const CLI = path.resolve(__dirname, '../dist/main.js');
let fake: FakeServer;
const KEY = 'template-cli-test-key';

beforeAll(async () => {
  fake = await startFakeServer();
});
afterAll(() => fake.close());
beforeEach(() => {
  fake.routes.clear();
  fake.seen.length = 0;
});

const VIEW = TEMPLATE_VIEW;

/** Runs the CLI to its end (asynchronously: the fake server answers from this process). */
function cli(args: string[], env: Record<string, string> = { NULLSPACE_API_URL: fake.url, NULLSPACE_API_KEY: KEY }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NULLSPACE_API_URL: '', NULLSPACE_API_KEY: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-cli-template-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const ndjson = (...events: unknown[]) => events.map((e) => JSON.stringify(e) + '\n').join('');

function serveBuild(events: string): { build?: Record<string, unknown>; context?: Buffer } {
  const got: { build?: Record<string, unknown>; context?: Buffer } = {};
  fake.routes.set('POST /v1/templates/contexts', (req, res) =>
    void body(req).then((b) => {
      got.context = b;
      json(res, 201, { contextId: 'ctx_0123456789abcdef', files: 1, bytes: b.length, sha256: 'x' });
    }),
  );
  fake.routes.set('POST /v1/templates', (req, res) =>
    void body(req).then((b) => {
      got.build = JSON.parse(b.toString()) as Record<string, unknown>;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' }).end(events);
    }),
  );
  return got;
}

describe('nullspace template build --file', () => {
  it('sends the Dockerfile, its context and the options, streams the log to stderr, prints the template', async () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM base\nCOPY app.js /srv/app/\nCMD ["node", "app.js"]\n');
    fs.writeFileSync(path.join(dir, 'app.js'), 'console.log(1)\n');
    const got = serveBuild(
      ndjson(
        { type: 'step', step: 1, of: 1, instruction: 'COPY app.js /srv/app/' },
        { type: 'log', step: 1, stream: 'stdout', data: Buffer.from('copied\n').toString('base64') },
        { type: 'stepDone', step: 1, ms: 300 },
        { type: 'done', template: VIEW },
      ),
    );
    const r = await cli(['template', 'build', '--file', path.join(dir, 'Dockerfile'), '--name', 'my-node', '--cpus', '2', '--memory-mib', '1024', '--disk-mib', '8192', '--no-cache', '--build-arg', 'V=2', '--build-arg', 'W=a=b']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('Step 1/1: COPY app.js /srv/app/\ncopied\nStep 1/1 done (0.3 s)\n');
    expect(r.stdout).toBe('template my-node:2 ready: 2 vCPU  1024 MiB  disk 8192 MiB  from template base:1  5 step(s)  start: node server.js\n');
    expect(got.build).toEqual({
      name: 'my-node',
      spec: { dockerfile: 'FROM base\nCOPY app.js /srv/app/\nCMD ["node", "app.js"]\n', steps: [] },
      contextId: 'ctx_0123456789abcdef',
      buildArgs: { V: '2', W: 'a=b' },
      cpuCount: 2,
      memoryMiB: 1024,
      diskSizeMiB: 8192,
      noCache: true,
    });
    expect(got.context?.includes(Buffer.from('console.log(1)\n'))).toBe(true);

    // --context replaces the Dockerfile's directory; --json prints the template
    const other = tmpDir();
    fs.writeFileSync(path.join(other, 'only-here.txt'), 'x');
    const got2 = serveBuild(ndjson({ type: 'done', template: VIEW }));
    const j = await cli(['template', 'build', '-f', path.join(dir, 'Dockerfile'), '--context', other, '--name', 'my-node', '--json']);
    expect(j.code, j.stderr).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ ref: 'my-node:2', cpuCount: 2 });
    expect(got2.build).toMatchObject({ noCache: false });
    expect(got2.context?.includes(Buffer.from('only-here.txt'))).toBe(true);
    expect(got2.context?.includes(Buffer.from('console.log(1)'))).toBe(false);
  });

  it('a failed build exits 1 with its code, after the log; so does a Dockerfile the server refuses', async () => {
    serveBuild(
      ndjson(
        { type: 'step', step: 1, of: 1, instruction: 'RUN false' },
        { type: 'error', code: 'template_build_failed', message: 'step 1/1 (RUN false) exited with code 1', step: 1, exitCode: 1, output: '' },
      ),
    );
    const r = await cli(['template', 'build', '--file', writeDockerfile('FROM base\nRUN false\n'), '--name', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('Step 1/1: RUN false\nerror [template_build_failed]: step 1/1 (RUN false) exited with code 1\n');

    fake.routes.set('POST /v1/templates', (req, res) =>
      void body(req).then(() => json(res, 400, { error: { code: 'invalid_dockerfile', message: 'line 2: VOLUME is not supported', details: { line: 2, instruction: 'VOLUME' } } })),
    );
    const bad = await cli(['template', 'build', '--file', writeDockerfile('FROM base\nVOLUME /x\n'), '--name', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('error [invalid_dockerfile]: line 2: VOLUME is not supported\n');
  });

  it('refuses --file without --name, a recipe with --file, and --context or --build-arg without --file, before any request', async () => {
    const df = writeDockerfile('FROM base\n');
    for (const args of [
      ['--file', df],
      ['base', '--file', df, '--name', 'x'],
      ['base', '--context', '/tmp'],
      ['--build-arg', 'A=1'],
      ['--file', df, '--name', 'x', '--build-arg', 'novalue'],
    ]) {
      const r = await cli(['template', 'build', ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/^error \[bad_argument\]: /);
    }
    expect(fake.seen).toEqual([]);
  });
});

/** A Dockerfile in a directory of its own (removed when the test ends). */
function writeDockerfile(text: string): string {
  const file = path.join(tmpDir(), 'Dockerfile');
  fs.writeFileSync(file, text);
  return file;
}

describe('nullspace template list, get, delete', () => {
  it("lists the server's templates when a server is configured; gets and deletes through it", async () => {
    fake.routes.set('GET /v1/templates', (_req, res) => json(res, 200, { templates: [VIEW] }));
    fake.routes.set('GET /v1/templates/my-node:2', (_req, res) => json(res, 200, VIEW));
    fake.routes.set('DELETE /v1/templates/my-node', (_req, res) => res.writeHead(204).end());
    fake.routes.set('DELETE /v1/templates/gone', (_req, res) => json(res, 404, { error: { code: 'template_not_found', message: 'no template gone' } }));
    const list = await cli(['template', 'list']);
    expect(list).toMatchObject({ code: 0, stdout: 'my-node:2  2 vCPU  1024 MiB  disk 8192 MiB  from template base:1  5 step(s)  start: node server.js\n' });
    expect(JSON.parse((await cli(['template', 'list', '--json'])).stdout)).toEqual([VIEW]);
    expect(JSON.parse((await cli(['template', 'get', 'my-node:2', '--json'])).stdout)).toEqual(VIEW);
    const get = await cli(['template', 'get', 'my-node:2']);
    expect(get.stdout).toContain('startCmd       node server.js\n');
    expect(await cli(['template', 'delete', 'my-node'])).toMatchObject({ code: 0, stdout: '' });
    expect(await cli(['template', 'delete', 'gone'])).toMatchObject({ code: 1, stderr: 'error [template_not_found]: template gone not found\n' });
    expect(fake.seen).toEqual(['GET /v1/templates', 'GET /v1/templates', 'GET /v1/templates/my-node:2', 'GET /v1/templates/my-node:2', 'DELETE /v1/templates/my-node', 'DELETE /v1/templates/gone']);
  });

  it('lists the build cache of this machine with --local, or when no server is configured; a server that does not answer points to --local', async () => {
    const cache = tmpDir();
    const noServer = { NULLSPACE_DATA_DIR: tmpDir(), NULLSPACE_CACHE_DIR: cache };
    expect(await cli(['template', 'list', '--local'], { ...noServer, NULLSPACE_API_URL: fake.url, NULLSPACE_API_KEY: KEY })).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const unconfigured = await cli(['template', 'list', '--json'], noServer);
    expect(unconfigured).toMatchObject({ code: 0, stderr: expect.stringContaining('no server configured') });
    expect(JSON.parse(unconfigured.stdout)).toEqual([]);
    expect(fake.seen).toEqual([]);
    const down = await cli(['template', 'list'], { ...noServer, NULLSPACE_API_URL: 'http://127.0.0.1:9', NULLSPACE_API_KEY: KEY });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^error \[connection_failed\]: .*template list --local/);
  });
});
