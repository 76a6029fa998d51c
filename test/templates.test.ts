import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tar from 'tar';
import { Sandbox } from 'nullspace';
import { api, apiKey, apiUrl, conn, expectGuestReachesArchive, sandbox } from './helpers.js';
import { CACHE_DIR } from './env.js';

/** The build context of the test app: a small HTTP server that says its pid and when it started. */
function appContext(extra: Record<string, string> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-tpl-ctx-'));
  const files: Record<string, string> = {
    'app/server.py': [
      'import http.server, os, time',
      'STARTED = time.time()',
      'class H(http.server.BaseHTTPRequestHandler):',
      '    def do_GET(self):',
      '        body = f"{os.getpid()} {STARTED} {os.environ.get(\'GREETING\')}".encode()',
      '        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)',
      '    def log_message(self, *a): pass',
      'http.server.HTTPServer(("127.0.0.1", 3000), H).serve_forever()',
      '',
    ].join('\n'),
    'app/data/config.json': '{"mode": "test"}\n',
    ...extra,
  };
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  }
  fs.symlinkSync('data/config.json', path.join(dir, 'app/config.json'));
  return dir;
}

function postContext(body: Buffer | string): Promise<Response> {
  return fetch(`${apiUrl()}/v1/templates/contexts`, { method: 'POST', headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/x-tar' }, body });
}

async function uploadContext(dir: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of tar.c({ cwd: dir, portable: true }, fs.readdirSync(dir))) chunks.push(c as Buffer);
  const res = await postContext(Buffer.concat(chunks));
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { contextId: string }).contextId;
}

interface BuildEvent {
  type: string;
  step?: number;
  cached?: boolean;
  instruction?: string;
  code?: string;
  message?: string;
  exitCode?: number | null;
  output?: string;
  template?: Record<string, unknown>;
  data?: string;
}

/** POSTs a build and reads its whole NDJSON stream (or returns the plain error answer). */
async function build(body: Record<string, unknown>): Promise<{ status: number; events: BuildEvent[]; last: BuildEvent; log: string; error?: { code: string; message: string } }> {
  const res = await fetch(`${apiUrl()}/v1/templates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.headers.get('content-type')?.includes('application/json')) {
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    return { status: res.status, events: [], last: { type: 'none' }, log: '', error };
  }
  const text = await res.text();
  const events = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as BuildEvent);
  const log = events.filter((e) => e.type === 'log').map((e) => Buffer.from(e.data!, 'base64').toString()).join('');
  return { status: res.status, events, last: events.at(-1)!, log };
}

const names: string[] = [];
const name = () => {
  const n = `t-${randomBytes(4).toString('hex')}`;
  names.push(n);
  return n;
};
afterAll(async () => {
  for (const n of names) await api('DELETE', `/v1/templates/${n}`);
});

describe('templates built from a Dockerfile: steps in a VM, the start command running in the snapshot', () => {
  const app = name();
  let ctx: string;
  let contextDir: string;
  // (a first step of its own: the build cache outlives test runs, and this run's first build must build)
  const nonce = randomBytes(8).toString('hex');
  // a Dockerfile: a Debian package, the app copied from the context, its server as the CMD, ready
  // when the EXPOSEd port listens
  const spec = (run: string) => ({
    dockerfile: [
      'FROM base',
      `RUN echo ${nonce} > /etc/build-nonce`,
      'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq',
      'COPY --chown=user:user app /srv/app',
      'ENV GREETING="hello from the template"',
      'WORKDIR /srv/app',
      `RUN ${run}`,
      'USER user',
      'EXPOSE 3000',
      'CMD ["python3", "server.py"]',
      '',
    ].join('\n'),
  });
  let first: Awaited<ReturnType<typeof build>>;

  beforeAll(async () => {
    // the apt step needs the Debian archive: a clear failure when there is none
    const probe = await Sandbox.create(conn());
    try {
      await expectGuestReachesArchive(probe);
    } finally {
      await probe.kill();
    }
    contextDir = appContext();
    ctx = await uploadContext(contextDir);
    first = await build({ name: app, spec: spec('echo built > built.txt && whoami'), contextId: ctx });
  }, 900_000);
  afterAll(() => fs.rmSync(contextDir, { recursive: true, force: true }));

  it('streams each step and its output, and ends with the template', async () => {
    const base = (await (await api('GET', '/v1/templates/base')).json()) as { version: number };
    expect(first.status).toBe(200);
    expect(first.last, JSON.stringify(first.last)).toMatchObject({ type: 'done' });
    const steps = first.events.filter((e) => e.type === 'step');
    expect(steps.map((e) => [e.step, e.cached])).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => [n, false]));
    expect(steps[1]!.instruction).toMatch(/^RUN apt-get update && .*apt-get install -y --no-install-recommends jq$/);
    expect(first.log).toMatch(/Setting up jq/);
    expect(first.log).toMatch(/^root$/m); // the RUN before USER ran as root
    expect(first.last.template).toMatchObject({
      name: app,
      version: 1,
      startCmd: 'python3 server.py',
      ready: { port: 3000 },
      exposedPorts: [3000],
      user: 'user',
      workdir: '/srv/app',
      envs: { GREETING: 'hello from the template' },
      from: `template base:${base.version}`,
      steps: 8,
      compatible: true,
    });
  });

  it('a sandbox of it has the service answering at once (the process of the snapshot, not restarted), the files, packages and defaults', async () => {
    const before = Date.now();
    const s = await sandbox({ template: app });
    const r = await s.commands.run('curl -s -m 5 http://127.0.0.1:3000/');
    const [pid, started, ...greeting] = r.stdout.split(' ');
    expect(Number(pid)).toBeGreaterThan(1);
    // it started during the build, before this sandbox existed
    expect(Number(started) * 1000).toBeLessThan(before);
    expect(greeting.join(' ')).toBe('hello from the template');
    // the start command is in the sandbox's process list (tagged), as in the snapshot: it can be attached to
    expect((await s.commands.list()).find((p) => p.pid === Number(pid))).toMatchObject({ cmd: 'python3 server.py', tag: 'template-start', running: true });
    // defaults of its commands: USER, WORKDIR, ENV
    expect((await s.commands.run('id -un; pwd; echo $GREETING')).stdout).toBe('user\n/srv/app\nhello from the template\n');
    expect((await s.commands.run('id -un', { user: 'root', cwd: '/' })).stdout).toBe('root\n');
    expect((await s.commands.run('jq -n 1+1')).stdout).toBe('2\n');
    expect(await s.files.read('/srv/app/built.txt')).toBe('built\n');
    expect(await s.files.read('/srv/app/data/config.json')).toBe('{"mode": "test"}\n');
    expect((await s.commands.run('readlink config.json; stat -c %U server.py')).stdout).toBe('data/config.json\nuser\n');
    // a sandbox's own envs still win
    const t = await sandbox({ template: app, envs: { GREETING: 'overridden' } });
    expect((await t.commands.run('echo $GREETING')).stdout).toBe('overridden\n');
    const info = (await (await api('GET', `/v1/templates/${app}`)).json()) as Record<string, unknown>;
    expect(info).toMatchObject({ name: app, version: 1, ref: `${app}:1` });
  });

  it('an unchanged rebuild reuses everything; a changed step rebuilds from there on as a new version; earlier versions stay usable', async () => {
    const again = await build({ name: app, spec: spec('echo built > built.txt && whoami'), contextId: ctx });
    expect(again.last, JSON.stringify(again.last)).toMatchObject({ type: 'done', template: { version: 1 } });
    expect(again.events.filter((e) => e.type === 'step').every((e) => e.cached)).toBe(true);
    expect(again.log).toBe('');

    const changed = await build({ name: app, spec: spec('echo changed > built.txt'), contextId: ctx });
    expect(changed.last, JSON.stringify(changed.last)).toMatchObject({ type: 'done', template: { version: 2 } });
    expect(changed.events.filter((e) => e.type === 'step').map((e) => e.cached)).toEqual([true, true, true, true, true, false, false, false]);
    const v2 = await sandbox({ template: app });
    expect(await v2.files.read('/srv/app/built.txt')).toBe('changed\n');
    const v1 = await sandbox({ template: `${app}:1` });
    expect(await v1.files.read('/srv/app/built.txt')).toBe('built\n');
  });

  it('deleting a template unregisters it; its sandboxes keep running', async () => {
    const other = name();
    const b = await build({ name: other, spec: { from: { template: app }, steps: [{ type: 'run', cmd: 'echo more > more.txt' }] } });
    expect(b.last, JSON.stringify(b.last)).toMatchObject({ type: 'done' });
    // noCache: every step again, a new version (and an unchanged rebuild after it reuses that)
    const nc = await build({ name: other, spec: { from: { template: app }, steps: [{ type: 'run', cmd: 'echo more > more.txt' }] }, noCache: true });
    expect(nc.last, JSON.stringify(nc.last)).toMatchObject({ type: 'done', template: { version: 2 } });
    expect(nc.events.filter((e) => e.type === 'step').map((e) => e.cached)).toEqual([false]);
    const s = await sandbox({ template: other });
    // FROM a template with a running service: it keeps running (a template is memory as well as disk)
    expect((await s.commands.run('cat more.txt; curl -s -m 5 -o /dev/null -w "%{http_code}" http://127.0.0.1:3000/')).stdout).toBe('more\n200');
    expect((await api('DELETE', `/v1/templates/${other}`)).status).toBe(204);
    expect((await api('GET', `/v1/templates/${other}`)).status).toBe(404);
    expect((await api('DELETE', `/v1/templates/${other}`)).status).toBe(404);
    const delBase = await api('DELETE', '/v1/templates/base');
    expect([delBase.status, ((await delBase.json()) as { error: { code: string } }).error.code]).toEqual([409, 'template_exists']);
    await expect(Sandbox.create({ ...conn(), template: other })).rejects.toMatchObject({ code: 'template_not_found' });
    expect((await s.commands.run('cat more.txt')).stdout).toBe('more\n');
  });
});

describe('template builds: bad input gets a clear error and leaves nothing behind', () => {
  const cacheTemplates = () => fs.readdirSync(path.join(CACHE_DIR, 'templates')).filter((f) => f.endsWith('.tmp'));

  it('refuses before building: unknown base, COPY outside the context or without one, base as a name, a smaller disk, a bad context', async () => {
    const bad: Array<[Record<string, unknown>, number, string]> = [
      [{ name: name(), spec: { from: { template: 'no-such-template' } } }, 404, 'template_not_found'],
      [{ name: name(), spec: { from: { template: 'base' }, steps: [{ type: 'copy', src: 'x', dest: '/x' }] } }, 400, 'invalid_build_spec'],
      [{ name: 'base', spec: { from: { template: 'base' } } }, 409, 'template_exists'],
      [{ name: 'Bad Name', spec: { from: { template: 'base' } } }, 400, 'validation_failed'],
      [{ name: name(), spec: { from: { template: 'base' } }, diskSizeMiB: 512 }, 400, 'invalid_build_spec'],
      [{ name: name(), spec: {} }, 400, 'invalid_build_spec'],
      [{ name: name(), spec: { from: { template: 'base' }, steps: [{ type: 'copy', src: 'x', dest: '/x' }] }, contextId: 'ctx_0000000000000000' }, 400, 'invalid_context'],
    ];
    for (const [body, status, code] of bad) {
      const r = await build(body);
      expect([r.status, r.error?.code], JSON.stringify(body)).toEqual([status, code]);
    }
    const dir = appContext();
    try {
      const ctx = await uploadContext(dir);
      const outside = await build({ name: name(), spec: { from: { template: 'base' }, steps: [{ type: 'copy', src: '../etc/passwd', dest: '/x' }] }, contextId: ctx });
      expect([outside.status, outside.error?.code]).toEqual([400, 'invalid_build_spec']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // a context with a path outside itself, or a device node
    const evil = Buffer.alloc(1024);
    const header = Buffer.alloc(512);
    header.write('../escape.txt', 0);
    header.write('0000644\0', 100);
    header.write('00000000000\0', 124);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('        ', 148);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    const res = await postContext(Buffer.concat([header, evil]));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_context');
    const notTar = await postContext('this is not a tar archive at all'.repeat(40));
    expect(notTar.status).toBe(400);
  });

  it('a failing step ends the build with its step, exit code and output; a ready check that never passes, or a start command that ends, too; nothing is registered', async () => {
    const failing = name();
    const f = await build({ name: failing, spec: { from: { template: 'base' }, steps: [{ type: 'run', cmd: 'echo about to fail; exit 3' }] } });
    expect(f.last).toMatchObject({ type: 'error', code: 'template_build_failed', step: 1, exitCode: 3 });
    expect(f.last.output).toContain('about to fail');
    expect((await api('GET', `/v1/templates/${failing}`)).status).toBe(404);

    const slow = name();
    const t = await build({ name: slow, spec: { from: { template: 'base' }, start: { cmd: 'sleep 600', ready: { port: 3999 }, timeoutMs: 3000 } } });
    expect(t.last).toMatchObject({ type: 'error', code: 'template_ready_timeout' });
    expect((await api('GET', `/v1/templates/${slow}`)).status).toBe(404);

    const ends = name();
    const e = await build({ name: ends, spec: { from: { template: 'base' }, start: { cmd: 'echo giving up >&2; exit 7', ready: { file: '/tmp/never' }, timeoutMs: 60_000 } } });
    expect(e.last).toMatchObject({ type: 'error', code: 'template_ready_timeout', exitCode: 7 });
    expect(e.last.output).toContain('giving up');
    expect((await api('GET', `/v1/templates/${ends}`)).status).toBe(404);
  });

  it('a second build of a name under way is refused (409); the first goes on', async () => {
    const n = name();
    const body = { name: n, spec: { from: { template: 'base' }, steps: [{ type: 'run', cmd: 'sleep 5' }] } };
    const first = build(body);
    await new Promise((r) => setTimeout(r, 1000));
    const second = await build(body);
    expect([second.status, second.error?.code]).toEqual([409, 'template_build_in_progress']);
    expect((await first).last).toMatchObject({ type: 'done' });
  });

  it('leaves no staging directory behind', () => {
    expect(cacheTemplates()).toEqual([]);
  });
});
