import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { run } from '@nullspace/runtime';
import { Sandbox, Template, TemplateBuildError, waitForPort } from 'nullspace';
import { leftoverQemu, TEST_ROOT } from './env.js';
import { busyboxTree, push, startRegistry, TEST_PASSWORD, TEST_USER, umoci, type Registry } from './oci-fixtures.js';
import { cli } from './servers.js';

/**
 * Templates whose start is an image, through the server and its front ends: a Dockerfile `FROM` an
 * image in a real registry (Debian's docker-registry on a loopback port) built with the CLI, an SDK
 * recipe `fromImage` of a registry with basic auth, a Dockerfile `FROM ctx:` a `docker save`
 * archive of its build context; and the refusals of such builds (auth refused, no such image, a
 * disk too small for the image, an unknown instruction, a COPY outside the context). The images
 * are busybox-only (no bash, no package manager, no /etc/passwd): nothing of the build may assume
 * Debian. A server of this file's own (its data dir under the test root) with the registries listed
 * as insecure (plain HTTP); the templates it builds are deleted at the end.
 */
const root = path.join(TEST_ROOT, `tsrc-${randomBytes(3).toString('hex')}`);
const layout = path.join(root, 'layout');
const b = (rel: string) => path.join(root, 'build', rel);
let anon: Registry | undefined;
let basic: Registry | undefined;
let server: (RunningServer & { key: string }) | undefined;
const conn = () => ({ apiUrl: server!.url, apiKey: server!.key });
const names: string[] = [];
const name = () => {
  const n = `src-${randomBytes(4).toString('hex')}`;
  names.push(n);
  return n;
};
const sandboxes: Sandbox[] = [];
async function sandbox(template: string): Promise<Sandbox> {
  const s = await Sandbox.create({ ...conn(), template });
  sandboxes.push(s);
  return s;
}

beforeAll(async () => {
  fs.mkdirSync(b('.'), { recursive: true });
  await umoci('init', '--layout', layout);
  // busybox: the static binary and its applet links (httpd among them), a page
  await busyboxTree(b('bb'));
  fs.mkdirSync(b('bb/www'));
  fs.writeFileSync(b('bb/www/index.html'), 'from the image\n');
  await umoci('new', '--image', `${layout}:bb`);
  await umoci('insert', '--image', `${layout}:bb`, b('bb'), '/');
  await umoci('config', '--image', `${layout}:bb`, '--config.cmd', 'sh', '--config.env', 'FROM_IMAGE=yes');
  // the same with 600 MiB of zeros: small in the registry, too big for a 512 MiB disk
  fs.mkdirSync(b('big'));
  await run('truncate', ['-s', '600M', b('big/zeros')]);
  await umoci('new', '--image', `${layout}:big`);
  await umoci('insert', '--image', `${layout}:big`, b('bb'), '/');
  await umoci('insert', '--image', `${layout}:big`, b('big'), '/big');

  anon = await startRegistry(path.join(root, 'reg-anon'), { kind: 'none' });
  basic = await startRegistry(path.join(root, 'reg-basic'), { kind: 'basic' });
  await push(layout, 'bb', `${anon.host}/bb:1`);
  await push(layout, 'big', `${anon.host}/big:1`);
  await push(layout, 'bb', `${basic.host}/private/bb:1`, { creds: true });
  // a docker save of it, in a build context of its own
  fs.mkdirSync(b('archive-ctx'));
  await run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:bb`, `docker-archive:${b('archive-ctx/bb.tar')}:bb:1`]);

  const key = `tsrc-${randomBytes(12).toString('hex')}`;
  const config = loadConfig(
    { ...process.env, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: key, NULLSPACE_INSECURE_REGISTRIES: `${anon.host},${basic.host}` },
    { dataDir: path.join(root, 'data'), port: 0 },
  );
  server = Object.assign(await startServer(config), { key });
}, 600_000);

afterAll(async () => {
  try {
    for (const s of sandboxes) await s.kill().catch(() => {});
    if (server) for (const n of names) await Template.delete(n, conn()).catch(() => {});
  } finally {
    await server?.close();
    for (const pid of leftoverQemu(path.join(root, 'data'))) process.kill(pid, 'SIGKILL');
    await anon?.stop();
    await basic?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
}, 300_000);

describe('templates from images, through the server', () => {
  it('CLI: a Dockerfile FROM an image in a registry: ARG, ENV, WORKDIR, COPY, RUN, EXPOSE and CMD; the service answers at once in its sandboxes', async () => {
    const ctx = b('cli-ctx');
    fs.mkdirSync(path.join(ctx, 'site'), { recursive: true });
    fs.writeFileSync(path.join(ctx, 'site', 'hello.txt'), 'from the context\n');
    fs.writeFileSync(path.join(ctx, 'notes.md'), 'not copied\n');
    fs.writeFileSync(
      path.join(ctx, 'Dockerfile'),
      [`FROM ${anon!.host}/bb:1`, 'ARG GREETING=unset', 'ENV GREETING=$GREETING', 'WORKDIR /www', 'COPY site/ ./', 'RUN echo "built: $GREETING $FROM_IMAGE" > built.txt', 'EXPOSE 8080', 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]', ''].join('\n'),
    );
    const n = name();
    const r = await cli(server!, ['template', 'build', '--file', path.join(ctx, 'Dockerfile'), '--name', n, '--build-arg', 'GREETING=hi', '--memory-mib', '256']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^template ${n}:1 ready`));
    // the log: the import, each step, the ready check the EXPOSE gave the CMD
    expect(r.stderr).toMatch(/Step 1\/5: ENV GREETING="hi"/);
    expect(r.stderr).toMatch(/Step 4\/5: RUN .*echo "built/);
    expect(r.stderr).toMatch(/ready when the first exposed port, 8080, listens/);

    const info = await Template.get(n, conn());
    expect(info).toMatchObject({ name: n, version: 1, memoryMiB: 256, from: `image ${anon!.host}/bb:1`, exposedPorts: [8080], workdir: '/www', startCmd: 'httpd -f -p 8080 -h /www', ready: { port: 8080 } });
    expect(info.envs).toMatchObject({ GREETING: 'hi', FROM_IMAGE: 'yes' });

    const s = await sandbox(n);
    // no waiting: the first request answers (wget exits non-zero on a refused connection)
    const page = await s.commands.run('wget -qO- http://127.0.0.1:8080/hello.txt && wget -qO- http://127.0.0.1:8080/index.html');
    expect(page).toMatchObject({ exitCode: 0, stdout: 'from the context\nfrom the image\n' });
    expect((await s.commands.list()).find((p) => p.tag === 'template-start')).toMatchObject({ cmd: 'httpd -f -p 8080 -h /www', running: true });
    expect((await s.commands.run('cat built.txt; pwd; test -e notes.md || echo no-notes; test -e /etc/passwd || echo no-passwd')).stdout).toBe('built: hi yes\n/www\nno-notes\nno-passwd\n');

    // the CLI's list and get show it
    const list = await cli(server!, ['template', 'list']);
    expect(list.stdout).toContain(n);
    const got = await cli(server!, ['template', 'get', n, '--json']);
    expect(JSON.parse(got.stdout)).toMatchObject({ name: n, version: 1 });
  }, 600_000);

  it('SDK: fromImage of a registry with basic auth; a refused password, an image that does not exist and a disk too small each fail with their code and leave no template', async () => {
    const n = name();
    const lines: string[] = [];
    const info = await Template.build(
      new Template().fromImage(`${basic!.host}/private/bb:1`, { username: TEST_USER, password: TEST_PASSWORD }).runCmd('echo from the sdk > /www/sdk.txt').setStartCmd('httpd -f -p 9090 -h /www', waitForPort(9090)),
      { ...conn(), name: n, memoryMiB: 256, onLog: (l) => lines.push(l) },
    );
    expect(info).toMatchObject({ name: n, version: 1, from: `image ${basic!.host}/private/bb:1`, ready: { port: 9090 } });
    expect(lines.join('\n')).toMatch(/Step 1\/1: RUN echo from the sdk/);
    const s = await sandbox(n);
    expect((await s.commands.run('wget -qO- http://127.0.0.1:9090/sdk.txt')).stdout).toBe('from the sdk\n');

    const refused: Array<[Template, Record<string, unknown>, string, RegExp]> = [
      [new Template().fromImage(`${basic!.host}/private/bb:1`, { username: TEST_USER, password: 'wrong' }), {}, 'registry_auth_failed', /unauthorized/i],
      [new Template().fromImage(`${basic!.host}/private/bb:1`), {}, 'registry_auth_failed', /unauthorized/i],
      [new Template().fromImage(`${anon!.host}/no-such-image:1`), {}, 'image_not_found', /unknown/],
      [new Template().fromImage(`${anon!.host}/big:1`), { diskSizeMiB: 512 }, 'disk_too_small', /does not fit a 512 MiB disk/],
    ];
    for (const [t, opts, code, message] of refused) {
      const bad = name();
      const err = (await Template.build(t, { ...conn(), name: bad, ...opts }).catch((e: unknown) => e)) as TemplateBuildError;
      expect(err, code).toBeInstanceOf(TemplateBuildError);
      expect([err.code, err.message], code).toEqual([code, expect.stringMatching(message)]);
      await expect(Template.get(bad, conn())).rejects.toMatchObject({ code: 'template_not_found' });
    }
  }, 600_000);

  it('SDK: a Dockerfile FROM a docker-save archive of its build context', async () => {
    const ctx = b('archive-ctx');
    fs.writeFileSync(path.join(ctx, 'Dockerfile'), ['FROM ctx:bb.tar', 'RUN echo "archive $FROM_IMAGE" > /www/a.txt', 'CMD httpd -f -p 8081 -h /www', ''].join('\n'));
    const n = name();
    const info = await Template.build(new Template().fromDockerfile(path.join(ctx, 'Dockerfile')), { ...conn(), name: n, memoryMiB: 256 });
    // a shell-form CMD without EXPOSE: no ready check; the snapshot is taken once it started
    expect(info).toMatchObject({ from: 'archive ctx:bb.tar', startCmd: 'httpd -f -p 8081 -h /www', ready: null });
    const s = await sandbox(n);
    expect((await s.commands.run('cat /www/a.txt; wget -qO- http://127.0.0.1:8081/index.html')).stdout).toBe('archive yes\nfrom the image\n');
  }, 600_000);

  it('CLI: an unknown instruction and a COPY outside the context are refused before anything is built, naming the line', async () => {
    const ctx = b('bad-ctx');
    fs.mkdirSync(ctx, { recursive: true });
    const cases: Array<[string, RegExp]> = [
      [`FROM ${anon!.host}/bb:1\nRUN true\nFROBNICATE now\n`, /\[invalid_dockerfile\]: line 3: .*FROBNICATE/],
      [`FROM ${anon!.host}/bb:1\nHEALTHCHECK CMD true\n`, /\[invalid_dockerfile\]: line 2: HEALTHCHECK is not supported/],
      ['FROM base\nCOPY ../secret /x\n', /\[invalid_dockerfile\]: line 2: .*outside the build context/],
    ];
    for (const [text, message] of cases) {
      fs.writeFileSync(path.join(ctx, 'Dockerfile'), text);
      const n = name();
      const r = await cli(server!, ['template', 'build', '--file', path.join(ctx, 'Dockerfile'), '--name', n]);
      expect([r.code, r.stderr], text).toEqual([1, expect.stringMatching(message)]);
      expect(r.stderr).not.toMatch(/Step 1/);
      expect((await cli(server!, ['template', 'get', n])).code).not.toBe(0);
    }
  }, 120_000);
});
