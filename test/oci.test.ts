import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  agentHash,
  buildTemplate,
  cloneFile,
  createOverlay,
  debootstrapHash,
  findTemplate,
  hostProfile,
  importImage,
  loadRecipe,
  NsError,
  Progress,
  pruneCache,
  run,
  Vm,
  type AgentClient,
  type HostProfile,
  type ImageInfo,
  type ImageSource,
  type ImportedImageInfo,
} from '@nullspace/runtime';
import { CACHE_DIR, TEST_ROOT } from './env.js';
import { sandbox } from './helpers.js';
import { addIndex, busyboxTree, debianTree, freePort, push, startRegistry, startTokenServer, TEST_PASSWORD, TEST_USER, umoci, type Registry, type TokenServer } from './oci-fixtures.js';

/**
 * OCI / Docker images imported as bootable images (runtime `importImage`), on real parts: Debian's
 * docker-registry (anonymous, htpasswd basic auth, bearer tokens from a test token endpoint) on
 * loopback ports, images built here with umoci from the base recipe's debootstrap tree and the
 * host's static busybox, pushed with skopeo; each import boots (a template snapshot restored, or a
 * cold boot) and runs commands and file operations with the agent as init. The imports use a cache
 * of their own (the agent binary copied from the suite's), removed at the end.
 */
const REPO = path.resolve(__dirname, '..');
const IMAGES_DIR = path.join(REPO, 'images');
const AGENT_DIR = path.join(REPO, 'agent');
const root = path.join(TEST_ROOT, `oci-${randomBytes(3).toString('hex')}`);
const cacheDir = path.join(root, 'cache');
const layout = path.join(root, 'build', 'layout');
const insecure: string[] = [];
let anon: Registry;
let basic: Registry;
let bearer: Registry;
let tokens: TokenServer;
let profile: HostProfile;
const archives = { docker: path.join(root, 'build', 'bb-docker.tar'), oci: path.join(root, 'build', 'bb-oci.tar'), junk: path.join(root, 'build', 'junk.tar'), text: path.join(root, 'build', 'notes.txt') };

beforeAll(async () => {
  fs.mkdirSync(path.join(root, 'build'), { recursive: true });
  // the agent the suite built, so that this cache does not compile it again
  const version = agentHash(AGENT_DIR);
  const agent = path.join(CACHE_DIR, 'agent', version, 'nullspace-agent');
  if (fs.existsSync(agent)) {
    fs.mkdirSync(path.join(cacheDir, 'agent', version), { recursive: true });
    fs.copyFileSync(agent, path.join(cacheDir, 'agent', version, 'nullspace-agent'));
  }
  const base = findTemplate(CACHE_DIR, 'base');
  if (!base) throw new Error('base template missing (the global setup builds it)');
  profile = await hostProfile({ accel: base.requirements.accel as 'kvm' | 'tcg', cpuModel: base.requirements.cpuModel });

  tokens = await startTokenServer(path.join(root, 'token'));
  anon = await startRegistry(path.join(root, 'reg-anon'), { kind: 'none' });
  basic = await startRegistry(path.join(root, 'reg-basic'), { kind: 'basic' });
  bearer = await startRegistry(path.join(root, 'reg-bearer'), { kind: 'token', token: tokens });
  insecure.push(anon.host, basic.host, bearer.host);

  // the images, in one OCI layout
  const b = (rel: string) => path.join(root, 'build', rel);
  await umoci('init', '--layout', layout);
  // busybox only: the static binary and its applet links; no bash, no /etc at all
  await busyboxTree(b('bb'));
  await umoci('new', '--image', `${layout}:bb`);
  await umoci('insert', '--image', `${layout}:bb`, b('bb'), '/');
  fs.writeFileSync(b('hello.txt'), 'hello from busybox\n');
  await umoci('insert', '--image', `${layout}:bb`, b('hello.txt'), '/hello.txt');
  await umoci('config', '--image', `${layout}:bb`, '--config.cmd', 'sh');
  // Debian: the base recipe's debootstrap tree (trimmed), then a layer with an owned file and one removing /usr/bin/less
  const { recipe } = loadRecipe(IMAGES_DIR, 'base');
  await debianTree(b('deb'), path.join(CACHE_DIR, 'debootstrap', `${recipe.debootstrap.suite}-${debootstrapHash(recipe)}.tar`));
  await umoci('new', '--image', `${layout}:deb`);
  await umoci('insert', '--image', `${layout}:deb`, b('deb'), '/');
  fs.mkdirSync(b('srv'));
  fs.writeFileSync(b('srv/owned.txt'), 'owned by 1000\n');
  fs.chownSync(b('srv/owned.txt'), 1000, 1000);
  fs.chmodSync(b('srv/owned.txt'), 0o640);
  await umoci('insert', '--image', `${layout}:deb`, b('srv'), '/srv');
  await umoci('insert', '--image', `${layout}:deb`, '--whiteout', '/usr/bin/less');
  await umoci('config', '--image', `${layout}:deb`, '--config.env', 'GREETING=hi there', '--config.workingdir', '/srv', '--config.user', '1000', '--config.exposedports', '3000/tcp');
  // a manifest list: an arm64 image first, then the amd64 one; and one without amd64
  for (const arch of ['amd64', 'arm64']) {
    fs.writeFileSync(b(`platform-${arch}`), `${arch}\n`);
    await umoci('new', '--image', `${layout}:${arch}`);
    await umoci('insert', '--image', `${layout}:${arch}`, b('bb'), '/');
    await umoci('insert', '--image', `${layout}:${arch}`, b(`platform-${arch}`), '/platform.txt');
    await umoci('config', '--image', `${layout}:${arch}`, '--architecture', arch);
  }
  addIndex(layout, 'multi', [
    ['arm64', 'arm64'],
    ['amd64', 'amd64'],
  ]);
  addIndex(layout, 'armonly', [['arm64', 'arm64']]);

  await push(layout, 'deb', `${anon.host}/deb:1`);
  await push(layout, 'bb', `${anon.host}/bb:1`);
  await push(layout, 'multi', `${anon.host}/multi:1`, { all: true });
  await push(layout, 'armonly', `${anon.host}/armonly:1`, { all: true });
  await push(layout, 'bb', `${basic.host}/private/bb:1`, { creds: true });
  await push(layout, 'bb', `${bearer.host}/private/bb:1`, { creds: true });
  // the same busybox image as `docker save` and OCI-layout tars; a tar of no image; a text file
  await run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:amd64`, `docker-archive:${archives.docker}:bb:1`]);
  await run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:bb`, `oci-archive:${archives.oci}:bb`]);
  fs.writeFileSync(archives.text, 'not an image\n');
  await run('tar', ['-C', path.dirname(archives.text), '-cf', archives.junk, path.basename(archives.text)]);
}, 600_000);

afterAll(async () => {
  await Promise.all([anon?.stop(), basic?.stop(), bearer?.stop(), tokens?.stop()]);
  fs.rmSync(root, { recursive: true, force: true });
});

function importer(source: ImageSource, diskSizeMiB: number, log: string[] = []): Promise<ImportedImageInfo> {
  return importImage({ source, cacheDir, imagesDir: IMAGES_DIR, agentDir: AGENT_DIR, diskSizeMiB, progress: new Progress('oci', (l) => log.push(l)), insecureRegistries: insecure });
}

/** A command in the guest: exit code and output. */
async function sh(agent: AgentClient, cmd: string, user?: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const r = await agent.open('proc.start', { cmd, ...(user ? { user } : {}) }, { onData: (c, b) => void (c === 2 ? err : out).push(b) }).result;
  return { exitCode: r.exitCode as number, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function writeFile(agent: AgentClient, file: string, data: string): Promise<void> {
  const w = agent.open('fs.write', { path: file });
  await w.write(Buffer.from(data));
  w.end();
  await w.result;
}

async function readFile(agent: AgentClient, file: string): Promise<string> {
  const out: Buffer[] = [];
  await agent.open('fs.read', { path: file }, { onData: (_c, b) => void out.push(b) }).result;
  return Buffer.concat(out).toString();
}

/** Boots `image` from scratch (the agent as init); the VM is killed when the test ends. */
async function coldBoot(image: ImageInfo): Promise<AgentClient> {
  const dir = path.join(root, `vm-${randomBytes(3).toString('hex')}`);
  fs.mkdirSync(dir, { mode: 0o700 });
  let vm: Vm | undefined;
  onTestFinished(async () => {
    await vm?.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await createOverlay(image.rootDisk, path.join(dir, 'disk.qcow2'));
  fs.closeSync(fs.openSync(path.join(dir, 'mem'), 'w', 0o600));
  fs.truncateSync(path.join(dir, 'mem'), 256 * 1024 * 1024);
  vm = await Vm.launch(profile, vmSpec(image, dir, 256, 1), false);
  return vm.connectAgent(120_000);
}

function vmSpec(image: ImageInfo, dir: string, memoryMiB: number, vcpus: number) {
  return {
    id: `ocitest-${randomBytes(3).toString('hex')}`,
    memoryMiB,
    vcpus,
    kernel: image.kernel,
    initrd: image.initrd,
    cmdline: image.cmdline,
    ramFile: path.join(dir, 'mem'),
    disk: path.join(dir, 'disk.qcow2'),
    diskSizeBytes: image.diskSizeMiB * 1024 * 1024,
    runDir: path.join(dir, 'run'),
    consoleLog: false,
    allowInternetAccess: false,
  };
}

/**
 * Builds a template on `image` (boot, warm-up, snapshot: what a template build does) and restores a
 * VM from it, as a sandbox starts; the VM is killed when the test ends (the template stays, for the
 * prune test, in this test's cache).
 */
async function templateBoot(image: ImageInfo, name: string): Promise<AgentClient> {
  const t = await buildTemplate({ name, image, profile, cacheDir, memoryMiB: 256, vcpus: 1, progress: new Progress(name, () => {}) });
  const dir = path.join(root, `vm-${randomBytes(3).toString('hex')}`);
  fs.mkdirSync(dir, { mode: 0o700 });
  let vm: Vm | undefined;
  onTestFinished(async () => {
    await vm?.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await cloneFile(t.memFile, path.join(dir, 'mem'));
  await createOverlay(t.disk, path.join(dir, 'disk.qcow2'));
  vm = await Vm.launch(profile, vmSpec(t.image, dir, t.memoryMiB, t.vcpus), true);
  await vm.restoreState(t.stateFile);
  return vm.connectAgent(30_000);
}

/** What an import leaves in the cache: image dirs, staging dirs, locks, auth files. */
function cacheEntries(): string[] {
  const list = (d: string) => (fs.existsSync(path.join(cacheDir, d)) ? fs.readdirSync(path.join(cacheDir, d)).map((f) => `${d}/${f}`) : []);
  return [...list('images'), ...list('run')].sort();
}

/** The import fails with `code` and a message matching `message`, and leaves nothing behind. */
async function expectRefused(source: ImageSource, diskSizeMiB: number, code: string, message: RegExp): Promise<NsError> {
  const before = cacheEntries();
  const err = await importer(source, diskSizeMiB).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `importing ${JSON.stringify(source)}`).toBeInstanceOf(NsError);
  expect((err as NsError).code, (err as Error).message).toBe(code);
  expect((err as Error).message).toMatch(message);
  expect(cacheEntries()).toEqual(before);
  return err as NsError;
}

describe('OCI images', () => {
  it('a Debian image from a registry boots as a template with the agent as init: bash, files, its layers, its config; a second import is the cached one', async () => {
    const log: string[] = [];
    const image = await importer({ ref: `${anon.host}/deb:1` }, 1024, log);
    expect(path.basename(image.dir)).toMatch(/^oci-[0-9a-f]{16}-[0-9a-f]{12}-[0-9a-f]{8}-1024m$/);
    expect(image.oci).toMatchObject({
      source: `image ${anon.host}/deb:1`,
      digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      config: { env: expect.arrayContaining(['GREETING=hi there']), user: '1000', workingDir: '/srv', exposedPorts: ['3000/tcp'] },
    });
    expect(fs.readdirSync(image.dir).sort()).toEqual(['image.json', 'initrd.cpio', 'rootfs.qcow2', 'vmlinux']);
    // modes as the base recipe's image has them: sandbox QEMU processes (their own uids) open these files
    const base = findTemplate(CACHE_DIR, 'base')!.image;
    const mode = (f: string) => (fs.statSync(f).mode & 0o7777).toString(8);
    expect([image.dir, image.rootDisk, image.kernel, image.initrd].map(mode)).toEqual([base.dir, base.rootDisk, base.kernel, base.initrd].map(mode));
    const again: string[] = [];
    expect((await importer({ ref: `${anon.host}/deb:1` }, 1024, again)).dir).toBe(image.dir);
    expect(again.join('\n')).toMatch(/is cached/);

    const agent = await templateBoot(image, 'oci-debian');
    const r = await sh(agent, 'echo "$BASH_VERSION"; . /etc/os-release; echo $ID; pwd; stat -c "%u:%g %a" /srv/owned.txt; test -e /usr/bin/less || echo less-removed; test -x /usr/local/bin/nullspace-agent && echo agent');
    expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    expect(r.stdout).toMatch(/^5\.\d.*\ndebian\n\/workspace\n1000:1000 640\nless-removed\nagent\n$/);
    await writeFile(agent, '/workspace/note.txt', 'written from the host\n');
    expect((await sh(agent, 'cat /workspace/note.txt; cat /srv/owned.txt')).stdout).toBe('written from the host\nowned by 1000\n');
    expect(await readFile(agent, '/etc/debian_version')).toMatch(/^12\./);
    // the image's user: a uid without a passwd entry; uid:gid
    expect((await sh(agent, 'id -u; id -g; echo $HOME; cat /srv/owned.txt', '1000')).stdout).toBe('1000\n0\n/\nowned by 1000\n');
    expect((await sh(agent, 'id -u; id -g', '1000:1000')).stdout).toBe('1000\n1000\n');
    expect((await sh(agent, 'id -un', 'nobody')).stdout).toBe('nobody\n');
  }, 400_000);

  it('a busybox-only image (no bash, no /etc/passwd) pulled with bearer-token auth: a template of it, a sandbox through the server: commands with /bin/sh, identity, files', async () => {
    const image = await importer({ ref: `${bearer.host}/private/bb:1`, auth: { username: TEST_USER, password: TEST_PASSWORD } }, 64);
    expect(tokens.requests.some((t) => t.user === TEST_USER && t.granted)).toBe(true);
    // a template in the suite's cache, so that its server creates a sandbox of it (QEMU under the sandbox's own uid, sys.init, the firewall)
    const name = `ocitest-${randomBytes(3).toString('hex')}`;
    onTestFinished(() => {
      const t = findTemplate(CACHE_DIR, name);
      fs.rmSync(path.join(CACHE_DIR, 'templates', `${name}.json`), { force: true });
      if (t) fs.rmSync(t.dir, { recursive: true, force: true });
    });
    await buildTemplate({ name, image, profile, cacheDir: CACHE_DIR, memoryMiB: 256, vcpus: 1, progress: new Progress(name, () => {}) });
    const sbx = await sandbox({ template: name });
    const r = await sbx.commands.run('readlink /proc/$$/exe; echo "bash:${BASH_VERSION:-none}"; test -e /etc/passwd || echo no-passwd; id -u; cat /hello.txt; grep localhost /etc/hosts | head -1; hostname; cat /etc/hostname; wc -c < /etc/machine-id');
    expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    expect(r.stdout).toBe(`/bin/busybox\nbash:none\nno-passwd\n0\nhello from busybox\n127.0.0.1\tlocalhost\n${sbx.sandboxId}\n${sbx.sandboxId}\n33\n`);
    await expect(sbx.commands.run('id -u', { user: 'nobody' })).rejects.toMatchObject({ code: 'bad_request', message: expect.stringMatching(/unknown user "nobody"/) });
    await sbx.files.write('/workspace/a/b.txt', 'nested\n');
    expect(await sbx.files.read('/workspace/a/b.txt')).toBe('nested\n');
    expect((await sbx.commands.run('ls /workspace/a; mount | grep " / "')).stdout).toMatch(/^b\.txt\n\/dev\/vda on \/ type ext4/);
  }, 400_000);

  it('a manifest list: the linux/amd64 image is picked; a list without one is refused', async () => {
    const image = await importer({ ref: `${anon.host}/multi:1` }, 64);
    const agent = await coldBoot(image);
    expect(await readFile(agent, '/platform.txt')).toBe('amd64\n');
    expect((await sh(agent, 'uname -m')).stdout).toBe('x86_64\n');
    await expectRefused({ ref: `${anon.host}/armonly:1` }, 64, 'image_invalid', /no linux\/amd64 image/);
  }, 300_000);

  it('docker save and OCI-layout tars', async () => {
    for (const [file, marker] of [
      [archives.docker, 'amd64\n'],
      [archives.oci, 'hello from busybox\n'],
    ] as const) {
      const image = await importer({ archive: file }, 64);
      expect(image.oci.source).toBe(`archive ${path.basename(file)}`);
      const agent = await coldBoot(image);
      expect((await sh(agent, `cat ${marker === 'amd64\n' ? '/platform.txt' : '/hello.txt'}; echo ok > /workspace/x; cat /workspace/x`)).stdout).toBe(`${marker}ok\n`);
    }
  }, 300_000);

  it('refusals: each with its code, and nothing left behind', async () => {
    // no such tag, no such repository
    await expectRefused({ ref: `${anon.host}/bb:nope` }, 64, 'image_not_found', /manifest unknown/);
    await expectRefused({ ref: `${anon.host}/nothing/here:1` }, 64, 'image_not_found', /unknown/);
    // basic auth: wrong password, none
    await importer({ ref: `${basic.host}/private/bb:1`, auth: { username: TEST_USER, password: TEST_PASSWORD } }, 64);
    await expectRefused({ ref: `${basic.host}/private/bb:1`, auth: { username: TEST_USER, password: 'wrong' } }, 64, 'registry_auth_failed', /unauthorized/);
    await expectRefused({ ref: `${basic.host}/private/bb:1` }, 64, 'registry_auth_failed', /unauthorized/);
    // bearer tokens: the token endpoint refuses the password
    const asked = tokens.requests.length;
    await expectRefused({ ref: `${bearer.host}/private/bb:1`, auth: { username: TEST_USER, password: 'wrong' } }, 64, 'registry_auth_failed', /401|unauthorized/i);
    expect(tokens.requests.slice(asked).some((t) => !t.granted)).toBe(true);
    // nothing listens; a plain-HTTP registry that is not listed as insecure
    const closed = `127.0.0.1:${await freePort()}`;
    await expectRefused({ ref: `${closed}/bb:1` }, 64, 'registry_unreachable', /connection refused/);
    insecure.splice(insecure.indexOf(anon.host), 1);
    try {
      await expectRefused({ ref: `${anon.host}/bb:1` }, 64, 'registry_unreachable', /HTTP response to HTTPS client/);
    } finally {
      insecure.push(anon.host);
    }
    // not a reference
    await expectRefused({ ref: `${anon.host}/Upper/Case:1` }, 64, 'bad_request', /invalid image reference/);
    // archives that are not images
    await expectRefused({ archive: archives.junk }, 64, 'image_invalid', /neither a docker save .* nor an OCI layout/);
    await expectRefused({ archive: archives.text }, 64, 'image_invalid', /not a tar archive/);
    await expectRefused({ archive: path.join(root, 'missing.tar') }, 64, 'image_invalid', /no such file/);
    // too small a disk: by the tree's size, and by ext4's own metadata on top
    const small = await expectRefused({ ref: `${anon.host}/deb:1` }, 32, 'disk_too_small', /does not fit a 32 MiB disk/);
    const needed = small.details.neededMiB as number;
    expect(needed).toBeGreaterThan(32);
    await expectRefused({ ref: `${anon.host}/deb:1` }, needed, 'disk_too_small', /with ext4's metadata/);
  }, 300_000);

  it('cache prune keeps an imported image a template uses, removes the others and the leftovers of an interrupted import', async () => {
    const used = await importer({ archive: archives.oci }, 64);
    const unused = await importer({ archive: archives.docker }, 64);
    // a template registered on `used` (its registry file and manifest: what the prune reads)
    const tdir = path.join(cacheDir, 'templates', 'oci-used-0123456789abcdef');
    fs.mkdirSync(tdir, { recursive: true });
    fs.writeFileSync(path.join(tdir, 'template.json'), JSON.stringify({ name: 'oci-used', dir: tdir, image: used }));
    fs.writeFileSync(path.join(cacheDir, 'templates', 'oci-used.json'), JSON.stringify({ dir: tdir }));
    // an import killed half-way: its staging dir and its dead lock
    const staging = path.join(cacheDir, 'images', 'oci-00000000deadbeef-000000000000-00000000-64m.tmp');
    fs.mkdirSync(path.join(staging, 'work', 'rootfs'), { recursive: true });
    const lock = path.join(cacheDir, 'images', 'oci-00000000deadbeef-000000000000-00000000-64m.lock');
    fs.mkdirSync(lock);
    fs.writeFileSync(path.join(lock, 'pid'), '999999999');
    const dataDir = path.join(root, 'data');
    fs.mkdirSync(dataDir, { recursive: true });
    fs.writeFileSync(path.join(dataDir, 'nullspace.db'), '');

    const report = await pruneCache(cacheDir, [dataDir], { dryRun: false });
    const removed = report.removed.map((e) => e.dir);
    expect(removed).toContain(unused.dir);
    expect(removed).toContain(staging);
    expect(removed).not.toContain(used.dir);
    expect(report.kept.find((e) => e.dir === used.dir)?.why).toBe('used by template directory oci-used-0123456789abcdef');
    for (const name of ['oci-debian']) {
      const t = findTemplate(cacheDir, name);
      if (t) expect(report.kept.find((e) => e.dir === t.image.dir)?.why).toBe(`used by template directory ${path.basename(t.dir)}`);
    }
    expect(fs.existsSync(unused.dir) || fs.existsSync(staging) || fs.existsSync(lock)).toBe(false);
    expect(fs.existsSync(path.join(used.dir, 'rootfs.qcow2'))).toBe(true);
    // what was removed is imported again
    const log: string[] = [];
    expect((await importer({ archive: archives.docker }, 64, log)).dir).toBe(unused.dir);
    expect(log.join('\n')).not.toMatch(/is cached/);
  }, 300_000);
});
