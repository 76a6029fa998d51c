import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { ConflictError, InvalidArgumentError, SandboxError, Template, TemplateBuildError, waitForCommand, waitForFile, waitForPort, type TemplateInfo } from '../src/index.js';
import { body, json, startFakeServer, TEMPLATE_VIEW, type FakeServer } from './fake-server.js';

/**
 * Template recipes against a fake server: the spec and the context tar it receives (read back with
 * GNU tar, an implementation of its own), the build's NDJSON stream as log lines, the done and
 * error events, errors before the stream.
 */

let fake: FakeServer;
const apiKey = 'template-test-key';
let opts: { apiUrl: string; apiKey: string };

beforeAll(async () => {
  fake = await startFakeServer();
  opts = { apiUrl: fake.url, apiKey };
});
afterAll(() => fake.close());
beforeEach(() => {
  fake.routes.clear();
  fake.seen.length = 0;
});

const VIEW = TEMPLATE_VIEW;

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const ndjson = (...events: unknown[]) => events.map((e) => JSON.stringify(e) + '\n').join('');

function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-template-test-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(file: string, content: string | Buffer, mode?: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  if (mode !== undefined) fs.chmodSync(file, mode);
}

/** What the fake server received: the context tar (extracted with GNU tar) and the build request's body. */
interface Received {
  contexts: Buffer[];
  contentType?: string;
  build?: Record<string, unknown>;
}

/** Routes that accept a context and answer the build with `events` (NDJSON); what they got goes in the result. */
function serveBuild(events: string | ((res: import('node:http').ServerResponse) => void)): Received {
  const got: Received = { contexts: [] };
  fake.routes.set('POST /v1/templates/contexts', (req, res) => {
    got.contentType = req.headers['content-type'];
    // (an upload the client breaks off is no error of the server's)
    body(req).then(
      (b) => {
        got.contexts.push(b);
        json(res, 201, { contextId: 'ctx_0123456789abcdef', files: 1, bytes: b.length, sha256: 'x' });
      },
      () => {},
    );
  });
  fake.routes.set('POST /v1/templates', (req, res) => {
    void body(req).then((b) => {
      got.build = JSON.parse(b.toString()) as Record<string, unknown>;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      if (typeof events === 'string') res.end(events);
      else events(res);
    });
  });
  return got;
}

/** The tar extracted into a fresh directory, and `tar -tv` of it (type, mode, name per line). */
function extract(tarBytes: Buffer): { dir: string; listing: string[] } {
  const dir = tmpDir();
  const file = path.join(dir, 'context.tar');
  fs.writeFileSync(file, tarBytes);
  const root = path.join(dir, 'x');
  fs.mkdirSync(root);
  execFileSync('tar', ['-xf', file, '-C', root, '--no-same-owner']);
  const listing = execFileSync('tar', ['-tvf', file], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((l) => {
      const f = l.split(/\s+/);
      return `${f[0]} ${f.slice(5).join(' ')}`; // "-rwxr-xr-x name" ("lrwxrwxrwx name -> target")
    });
  return { dir: root, listing };
}

describe('Template recipe -> build spec', () => {
  it('each builder method becomes its step; ready checks; a start with its timeout', () => {
    const t = new Template()
      .fromTemplate('base')
      .aptInstall(['jq', 'curl'])
      .aptInstall('git')
      .runCmd('npm ci')
      .runCmd(['a', 'b'])
      .setEnvs({ NODE_ENV: 'production' })
      .setWorkdir('/srv/app')
      .setUser('user')
      .expose(3000)
      .setStartCmd('node server.js', waitForPort(3000), { timeoutMs: 90_000 });
    expect(t.toSpec()).toEqual({
      from: { template: 'base' },
      steps: [
        { type: 'apt', packages: ['jq', 'curl'] },
        { type: 'apt', packages: ['git'] },
        { type: 'run', cmd: 'npm ci' },
        { type: 'run', cmd: 'a && b' },
        { type: 'env', envs: { NODE_ENV: 'production' } },
        { type: 'workdir', path: '/srv/app' },
        { type: 'user', name: 'user' },
        { type: 'expose', port: 3000 },
      ],
      start: { cmd: 'node server.js', ready: { port: 3000 }, timeoutMs: 90_000 },
    });
    expect(waitForCommand('curl -sf localhost:3000')).toEqual({ cmd: 'curl -sf localhost:3000' });
    expect(waitForFile('/tmp/ready')).toEqual({ file: '/tmp/ready' });
    expect(new Template().fromImage('registry.example:5000/app:1', { username: 'u', password: 'p' }).setStartCmd('x').toSpec()).toEqual({
      from: { image: 'registry.example:5000/app:1', auth: { username: 'u', password: 'p' } },
      steps: [],
      start: { cmd: 'x' },
    });
    expect(new Template().fromImage('debian:12').toSpec().from).toEqual({ image: 'debian:12' });
  });

  it('fromDockerfile takes a path (a file or its directory) or the text', () => {
    const dir = tmpDir();
    write(path.join(dir, 'Dockerfile'), 'FROM base\nRUN true\n');
    expect(new Template().fromDockerfile(path.join(dir, 'Dockerfile')).toSpec()).toEqual({ dockerfile: 'FROM base\nRUN true\n', steps: [] });
    expect(new Template().fromDockerfile(dir).toSpec().dockerfile).toBe('FROM base\nRUN true\n');
    expect(new Template().fromDockerfile('FROM base').runCmd('x').toSpec()).toEqual({ dockerfile: 'FROM base', steps: [{ type: 'run', cmd: 'x' }] });
    expect(new Template().fromDockerfile('# syntax=docker/dockerfile:1\nFROM base').toSpec().dockerfile).toBe('# syntax=docker/dockerfile:1\nFROM base');
  });

  it('refuses a second start, a Dockerfile after steps, local paths that do not exist', () => {
    expect(() => new Template().fromTemplate('base').fromImage('debian')).toThrow(InvalidArgumentError);
    expect(() => new Template().fromDockerfile('FROM base').fromTemplate('base')).toThrow(/already has a start/);
    expect(() => new Template().runCmd('x').fromDockerfile('FROM base')).toThrow(/before adding steps/);
    expect(() => new Template().fromTemplate('base').copy('/nonexistent/x', '/x')).toThrow(/does not exist/);
    expect(() => new Template().fromArchive('/nonexistent/app.tar')).toThrow(/does not exist/);
    expect(() => new Template().fromDockerfile('/nonexistent/Dockerfile')).toThrow(/does not exist/);
    expect(() => new Template().fromImage('x', { username: 'u' })).toThrow(/both username and password/);
  });
});

describe('Template.build: the context the server receives', () => {
  it('a Dockerfile directory as the context (.dockerignore applied), then the recipe copies under .nullspace/', async () => {
    const ctx = tmpDir();
    write(path.join(ctx, 'Dockerfile'), 'FROM base\nCOPY . /srv/app\n');
    write(path.join(ctx, '.dockerignore'), '# build output and secrets\nnode_modules\n**/*.log\n/secret.txt\n!keep.log\n');
    write(path.join(ctx, 'server.js'), 'console.log(1)\n', 0o644);
    write(path.join(ctx, 'run.sh'), '#!/bin/sh\necho hi\n', 0o755);
    write(path.join(ctx, 'empty'), '');
    write(path.join(ctx, 'secret.txt'), 'no');
    write(path.join(ctx, 'a.log'), 'no');
    write(path.join(ctx, 'keep.log'), 'yes');
    write(path.join(ctx, 'lib', 'deep', 'x.log'), 'no');
    write(path.join(ctx, 'lib', 'util.js'), 'u');
    write(path.join(ctx, 'node_modules', 'left', 'index.js'), 'no');
    const long = `${'d'.repeat(90)}/${'e'.repeat(90)}/${'f'.repeat(120)}.txt`; // > 255 bytes: a PAX path
    write(path.join(ctx, long), 'long');
    write(path.join(ctx, 'ünïcödé €.txt'), 'utf8 name');
    fs.symlinkSync('server.js', path.join(ctx, 'link.js'));
    const big = Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a);
    write(path.join(ctx, 'big.bin'), big);

    const local = tmpDir();
    write(path.join(local, 'config.json'), '{"a":1}', 0o600);
    write(path.join(local, 'assets', 'logo.svg'), '<svg/>');

    const got = serveBuild(ndjson({ type: 'done', template: VIEW }));
    const t = new Template()
      .fromDockerfile(path.join(ctx, 'Dockerfile'))
      .copy(path.join(local, 'config.json'), '/etc/app/', { chown: 'user:user', mode: 0o640 })
      .copy(path.join(local, 'assets'), '/srv/assets', { mode: '0755' });
    const info = await Template.build(t, { ...opts, name: 'my-node', cpuCount: 2, memoryMiB: 1024, diskSizeMiB: 8192, noCache: true, buildArgs: { V: '2' } });
    expect(info).toEqual({ ...VIEW, createdAt: new Date(VIEW.createdAt) });
    expect(fake.seen).toEqual(['POST /v1/templates/contexts', 'POST /v1/templates']);
    expect(got.contentType).toBe('application/x-tar');

    expect(got.build).toEqual({
      name: 'my-node',
      spec: {
        dockerfile: 'FROM base\nCOPY . /srv/app\n',
        steps: [
          { type: 'copy', src: '.nullspace/copy/0/config.json', dest: '/etc/app/', chown: 'user:user', mode: '0640' },
          { type: 'copy', src: '.nullspace/copy/1/assets', dest: '/srv/assets', mode: '0755' },
        ],
      },
      contextId: 'ctx_0123456789abcdef',
      buildArgs: { V: '2' },
      cpuCount: 2,
      memoryMiB: 1024,
      diskSizeMiB: 8192,
      noCache: true,
    });

    const { dir, listing } = extract(got.contexts[0]!);
    const files = execFileSync('find', ['.', '-mindepth', '1'], { cwd: dir, encoding: 'utf8' }).trim().split('\n').map((p) => p.slice(2)).sort();
    expect(files).toEqual(
      [
        '.dockerignore',
        '.nullspace',
        '.nullspace/copy',
        '.nullspace/copy/0',
        '.nullspace/copy/0/config.json',
        '.nullspace/copy/1',
        '.nullspace/copy/1/assets',
        '.nullspace/copy/1/assets/logo.svg',
        'Dockerfile',
        'big.bin',
        'd'.repeat(90),
        `${'d'.repeat(90)}/${'e'.repeat(90)}`,
        long,
        'empty',
        'keep.log',
        'lib',
        'lib/deep',
        'lib/util.js',
        'link.js',
        'run.sh',
        'server.js',
        'ünïcödé €.txt',
      ].sort(),
    );
    expect(fs.readFileSync(path.join(dir, long), 'utf8')).toBe('long');
    expect(fs.readFileSync(path.join(dir, 'ünïcödé €.txt'), 'utf8')).toBe('utf8 name');
    expect(fs.readFileSync(path.join(dir, 'big.bin')).equals(big)).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'empty'), 'utf8')).toBe('');
    expect(fs.readFileSync(path.join(dir, '.nullspace/copy/0/config.json'), 'utf8')).toBe('{"a":1}');
    expect(fs.readFileSync(path.join(dir, '.nullspace/copy/1/assets/logo.svg'), 'utf8')).toBe('<svg/>');
    expect(fs.readlinkSync(path.join(dir, 'link.js'))).toBe('server.js');
    // modes as they are locally, a symbolic link as a link, everything owned by root
    expect(listing).toContain('-rwxr-xr-x run.sh');
    expect(listing).toContain('-rw-r--r-- server.js');
    expect(listing).toContain('-rw------- .nullspace/copy/0/config.json');
    expect(listing).toContain('lrwxrwxrwx link.js -> server.js');
    expect(listing).toContain('drwxr-xr-x .nullspace/');
    const owners = execFileSync('tar', ['-tvf', '-'], { input: got.contexts[0], encoding: 'utf8' }).trim().split('\n').map((l) => l.split(/\s+/)[1]);
    expect(new Set(owners)).toEqual(new Set(['root/root']));
  });

  it('a context option replaces the Dockerfile directory; a recipe without local files sends no context', async () => {
    const dfDir = tmpDir();
    write(path.join(dfDir, 'Dockerfile'), 'FROM base\nCOPY app.js /srv/\n');
    write(path.join(dfDir, 'not-sent.txt'), 'x');
    const ctx = tmpDir();
    write(path.join(ctx, 'app.js'), 'app');
    let got = serveBuild(ndjson({ type: 'done', template: VIEW }));
    await Template.build(new Template().fromDockerfile(path.join(dfDir, 'Dockerfile')), { ...opts, name: 'a', context: ctx });
    expect(fs.readdirSync(extract(got.contexts[0]!).dir)).toEqual(['app.js']);

    got = serveBuild(ndjson({ type: 'done', template: VIEW }));
    await Template.build(new Template().fromTemplate('base').runCmd('true'), { ...opts, name: 'a' });
    expect(fake.seen.slice(-1)).toEqual(['POST /v1/templates']);
    expect(got.contexts).toEqual([]);
    expect(got.build).toEqual({ name: 'a', spec: { from: { template: 'base' }, steps: [{ type: 'run', cmd: 'true' }] } });
  });

  it('fromArchive sends the image archive in the context and starts from it', async () => {
    const dir = tmpDir();
    write(path.join(dir, 'app.tar'), 'not really a tar');
    const got = serveBuild(ndjson({ type: 'done', template: VIEW }));
    await Template.build(new Template().fromArchive(path.join(dir, 'app.tar')), { ...opts, name: 'a' });
    expect(got.build?.spec).toEqual({ from: { archive: 'ctx:.nullspace/from/0/app.tar' }, steps: [] });
    expect(fs.readFileSync(path.join(extract(got.contexts[0]!).dir, '.nullspace/from/0/app.tar'), 'utf8')).toBe('not really a tar');
  });

  it('a local file gone by the time of the build fails with its own error, not a connection error', async () => {
    const dir = tmpDir();
    write(path.join(dir, 'x.txt'), 'x');
    const t = new Template().fromTemplate('base').copy(path.join(dir, 'x.txt'), '/x');
    fs.rmSync(path.join(dir, 'x.txt'));
    serveBuild(ndjson({ type: 'done', template: VIEW }));
    const err = await Template.build(t, { ...opts, name: 'a' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxError);
    expect(err).toMatchObject({ code: 'bad_request', message: expect.stringContaining('x.txt') });
    expect(fake.seen).not.toContain('POST /v1/templates');
  });

  it('refuses a context that is not a directory, and one whose .nullspace would mix with the recipe files', async () => {
    const dir = tmpDir();
    write(path.join(dir, 'f'), 'x');
    fs.mkdirSync(path.join(dir, '.nullspace'));
    await expect(Template.build(new Template().fromTemplate('base'), { ...opts, name: 'a', context: path.join(dir, 'f') })).rejects.toThrow(/is not a directory/);
    await expect(Template.build(new Template().fromTemplate('base').copy(path.join(dir, 'f'), '/f'), { ...opts, name: 'a', context: dir })).rejects.toThrow(/has a \.nullspace entry/);
    expect(fake.seen).toEqual([]);
  });
});

describe('Template.build: the build stream', () => {
  it('hands out log lines as they come: step headers, output lines (UTF-8 split across chunks), info, step timings', async () => {
    const lines: string[] = [];
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const euro = Buffer.from('€');
    serveBuild((res) => {
      res.write(ndjson({ type: 'info', message: 'pulling nothing: base is local' }, { type: 'step', step: 1, of: 2, instruction: 'RUN npm ci', cached: false }));
      res.write(ndjson({ type: 'log', step: 1, stream: 'stdout', data: b64(Buffer.concat([Buffer.from('added 3 packages\npart'), euro.subarray(0, 1)])) }));
      // the line so far is out before the server goes on (it waits for the client to have it)
      void released.then(() => {
        res.write(
          ndjson(
            { type: 'log', step: 1, stream: 'stderr', data: b64('warn: x\r\n') },
            { type: 'log', step: 1, stream: 'stdout', data: b64(Buffer.concat([euro.subarray(1), Buffer.from('ial\n')])) },
            { type: 'log', step: 1, stream: 'stdout', data: b64('no newline at the end') },
            { type: 'stepDone', step: 1, ms: 1234 },
            { type: 'step', step: 2, of: 2, instruction: 'COPY app /srv/app', cached: true },
            { type: 'stepDone', step: 2, ms: 5 },
            { type: 'some-future-event' },
            { type: 'done', template: VIEW },
          ),
        );
        res.end();
      });
    });
    const info = await Template.build(new Template().fromTemplate('base'), {
      ...opts,
      name: 'my-node',
      onLog: (line) => {
        lines.push(line);
        if (line === 'added 3 packages') release();
      },
    });
    expect(lines).toEqual([
      'pulling nothing: base is local',
      'Step 1/2: RUN npm ci',
      'added 3 packages',
      'warn: x',
      'part€ial',
      'no newline at the end',
      'Step 1/2 done (1.2 s)',
      'Step 2/2: COPY app /srv/app (cached)',
      'Step 2/2 done (0.0 s)',
    ]);
    expect(info.ref).toBe('my-node:2');
    expect(info.createdAt).toBeInstanceOf(Date);
  });

  it('an error event is a TemplateBuildError with its code, step, exit code and output, after the lines before it', async () => {
    const lines: string[] = [];
    serveBuild(
      ndjson(
        { type: 'step', step: 3, of: 7, instruction: 'RUN npm test' },
        { type: 'log', step: 3, stream: 'stderr', data: b64('1 test failed\n') },
        { type: 'error', code: 'template_build_failed', message: 'step 3/7 (RUN npm test) exited with code 2', step: 3, exitCode: 2, output: '1 test failed\n' },
      ),
    );
    const err = await Template.build(new Template().fromTemplate('base'), { ...opts, name: 'a', onLog: (l) => lines.push(l) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TemplateBuildError);
    expect(err).toBeInstanceOf(SandboxError);
    expect(err).toMatchObject({ code: 'template_build_failed', message: 'step 3/7 (RUN npm test) exited with code 2', step: 3, exitCode: 2, output: '1 test failed\n' });
    expect(lines).toEqual(['Step 3/7: RUN npm test', '1 test failed']);

    serveBuild(ndjson({ type: 'error', code: 'template_ready_timeout', message: 'port 3000 not open after 60000 ms', output: 'listening on 3001\n' }));
    expect(await Template.build(new Template().fromTemplate('base'), { ...opts, name: 'a' }).catch((e: unknown) => e)).toMatchObject({
      code: 'template_ready_timeout',
      step: null,
      exitCode: null,
      output: 'listening on 3001\n',
    });
  });

  it('a stream that ends without done or error is stream_ended', async () => {
    serveBuild(ndjson({ type: 'step', step: 1, of: 1, instruction: 'RUN x' }));
    await expect(Template.build(new Template().fromTemplate('base'), { ...opts, name: 'a' })).rejects.toMatchObject({ code: 'stream_ended' });
  });

  it('errors before the stream are plain API errors of their code; a refused context stops the build', async () => {
    fake.routes.set('POST /v1/templates', (_req, res) =>
      json(res, 400, { error: { code: 'invalid_dockerfile', message: 'line 2: VOLUME is not supported', details: { line: 2, instruction: 'VOLUME' } } }),
    );
    const err = await Template.build(new Template().fromDockerfile('FROM base\nVOLUME /x'), { ...opts, name: 'a' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err).not.toBeInstanceOf(TemplateBuildError);
    expect(err).toMatchObject({ code: 'invalid_dockerfile', status: 400, details: { line: 2, instruction: 'VOLUME' } });

    fake.routes.set('POST /v1/templates', (_req, res) => json(res, 409, { error: { code: 'template_build_in_progress', message: 'my-node is being built' } }));
    await expect(Template.build(new Template().fromTemplate('base'), { ...opts, name: 'my-node' })).rejects.toBeInstanceOf(ConflictError);

    const dir = tmpDir();
    write(path.join(dir, 'f'), 'x');
    fake.seen.length = 0;
    fake.routes.set('POST /v1/templates/contexts', (req, res) => void body(req).then(() => json(res, 400, { error: { code: 'invalid_context', message: 'a device node' } })));
    await expect(Template.build(new Template().fromTemplate('base').copy(path.join(dir, 'f'), '/f'), { ...opts, name: 'a' })).rejects.toMatchObject({ code: 'invalid_context', status: 400 });
    expect(fake.seen).toEqual(['POST /v1/templates/contexts']);
  });
});

describe('Template.list, get, delete', () => {
  it('lists, gets name or name:version, deletes (false when there is none)', async () => {
    fake.routes.set('GET /v1/templates', (_req, res) => json(res, 200, { templates: [VIEW] }));
    fake.routes.set('GET /v1/templates/my-node:2', (_req, res) => json(res, 200, VIEW));
    fake.routes.set('DELETE /v1/templates/my-node', (_req, res) => res.writeHead(204).end());
    const list: TemplateInfo[] = await Template.list(opts);
    expect(list.map((t) => t.ref)).toEqual(['my-node:2']);
    expect(list[0]!.createdAt.toISOString()).toBe(VIEW.createdAt);
    expect((await Template.get('my-node:2', opts)).envs).toEqual({ NODE_ENV: 'production' });
    await expect(Template.get('nope', opts)).rejects.toMatchObject({ code: 'route_not_found' });
    expect(await Template.delete('my-node', opts)).toBe(true);
    fake.routes.set('DELETE /v1/templates/gone', (_req, res) => json(res, 404, { error: { code: 'template_not_found', message: 'no template gone' } }));
    expect(await Template.delete('gone', opts)).toBe(false);
  });
});
