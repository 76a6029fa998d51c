import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { apiKeyDigestHex, loadConfig, snapshotGrant, templateGrant } from '@nullspace/server';
import { cleanupDataDir, ownServer, req, statusAndCode, tempDataDir } from './servers.js';

/**
 * Copying a template from one server's cache to another's (docs/api.md "Artifacts"): server A (the
 * suite's cache, `base` built) builds a small template; server B, on a cache of its own holding only
 * a `base` of its own (same paths as A's, other bytes), imports it with a grant of A's key and runs a
 * sandbox of it that has the file the build wrote, its chain on A's base bytes (B's base untouched);
 * a second import moves nothing; a second template of the same lineage moves only what is its own. What may not pass does not: a file of A that no longer
 * has its manifest's digest, grants that are wrong, expired or for something else, paths outside the
 * manifest, an unknown template, a host of another VM profile (refused before anything moves).
 */

interface TemplateManifest {
  name: string;
  version: number;
  key: string;
  dir: string;
  cacheDir: string;
  files: Array<{ path: string; bytes: number; sha256: string }>;
}

type Srv = { url: string; key: string };
const code = statusAndCode;

/** A GET with the path sent as it is (fetch would resolve `..` segments before sending). */
const rawGet = (srv: Srv, p: string) =>
  new Promise<{ status: number; json: Record<string, any> }>((resolve, reject) => {
    const u = new URL(srv.url);
    const r = http.request({ host: u.hostname, port: u.port, path: p, headers: { authorization: `Bearer ${srv.key}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let json: Record<string, any> = {};
        try {
          json = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, any>;
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    r.on('error', reject);
    r.end();
  });

/** Flips one byte of a (read-only) file in place and puts its mtime back (so a kept digest still looks valid); returns the undo. */
function tamper(file: string, at: number): () => void {
  const st = fs.statSync(file, { bigint: true });
  const stamp = `@${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
  const flip = () => {
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    fs.writeSync(fd, Buffer.from([b[0]! ^ 0xff]), 0, 1, at);
    fs.closeSync(fd);
    execFileSync('touch', ['-m', '-d', stamp, file]);
  };
  flip();
  return flip;
}

/** What a cache holds of templates (registry files and directories, staging leftovers). */
const cacheEntries = (cacheDir: string) => ({
  templates: fs.existsSync(path.join(cacheDir, 'templates')) ? fs.readdirSync(path.join(cacheDir, 'templates')).filter((f) => !f.endsWith('.lock')).sort() : [],
  staging: fs.existsSync(path.join(cacheDir, 'staging')) ? fs.readdirSync(path.join(cacheDir, 'staging')) : [],
});

/** A cache dir of the test's own: only the egress proxy's binary of the suite's cache (no go build at start), no template. */
function emptyCache(from: string): string {
  const dir = `${tempDataDir()}-cache`;
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('cp', ['-a', '--reflink=auto', path.join(from, 'egress'), path.join(dir, 'egress')]);
  return dir;
}

/**
 * Gives `cacheDir` a `base` of its own at the same paths as the one of `from` but with other bytes
 * (its paths are this cache's: template.json and the disk's backing header), as a host that built
 * its own base has. Returns the digest of its disk, to see that it stays.
 */
function ownBase(from: string, cacheDir: string): string {
  const reg = JSON.parse(fs.readFileSync(path.join(from, 'templates', 'base.json'), 'utf8')) as { dir: string };
  const info = JSON.parse(fs.readFileSync(path.join(reg.dir, 'template.json'), 'utf8')) as { image: { dir: string; rootDisk: string } };
  const tdir = path.join(cacheDir, 'templates', path.basename(reg.dir));
  const idir = path.join(cacheDir, 'images', path.basename(info.image.dir));
  fs.mkdirSync(path.dirname(tdir), { recursive: true });
  fs.mkdirSync(path.dirname(idir), { recursive: true });
  execFileSync('cp', ['-a', '--reflink=auto', reg.dir, tdir]);
  execFileSync('cp', ['-a', '--reflink=auto', info.image.dir, idir]);
  const json = path.join(tdir, 'template.json');
  const text = fs.readFileSync(json, 'utf8').split(from + '/').join(cacheDir + '/');
  fs.rmSync(json);
  fs.writeFileSync(json, text, { mode: 0o444 });
  const disk = path.join(tdir, 'disk.qcow2');
  fs.chmodSync(disk, 0o644);
  execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(idir, path.basename(info.image.rootDisk)), disk]);
  fs.chmodSync(disk, 0o444);
  fs.writeFileSync(path.join(cacheDir, 'templates', 'base.json'), JSON.stringify({ dir: tdir, version: 1, versions: [{ version: 1, dir: tdir, registeredAt: '' }] }));
  return sha256(disk);
}

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

async function buildTemplate(srv: Srv, name: string, dockerfile: string): Promise<void> {
  const res = await fetch(`${srv.url}/v1/templates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${srv.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, spec: { dockerfile } }),
  });
  const text = await res.text();
  const last = JSON.parse(text.trim().split('\n').at(-1)!) as { type: string };
  expect([res.status, last.type], text.slice(-2000)).toEqual([200, 'done']);
}

describe('artifacts: a template moves from one server cache to another', () => {
  it('imports a built template into an empty cache, runs it there; a second import moves nothing; refuses what it must', async () => {
    const cacheA = loadConfig(process.env, { dataDir: '/nonexistent', port: 0 }).cacheDir;
    const cacheB = emptyCache(cacheA);
    const cacheC = emptyCache(cacheA);
    const dirA = tempDataDir();
    const dirB = tempDataDir();
    const dirC = tempDataDir();
    cleanupDataDir(dirA);
    cleanupDataDir(dirB);
    cleanupDataDir(dirC);
    const env = { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' };
    const A = await ownServer(dirA, env);
    const baseB = ownBase(cacheA, cacheB);
    const B = await ownServer(dirB, { ...env, NULLSPACE_CACHE_DIR: cacheB });
    // C: another VM profile (a CPU model of its own), nothing may move onto it
    const C = await ownServer(dirC, { ...env, NULLSPACE_CACHE_DIR: cacheC, NULLSPACE_CPU_MODEL: 'qemu64' });
    const keyA = apiKeyDigestHex(A.key);
    const name = `tc-${randomBytes(4).toString('hex')}`;
    const names = [name];
    const nonce = randomBytes(8).toString('hex');
    const open: Sandbox[] = [];
    try {
      const namesOn = async (srv: Srv) => ((await req(srv, 'GET', '/v1/templates')).json.templates as Array<{ name: string; compatible: boolean }>).map((t) => [t.name, t.compatible]);
      expect(await namesOn(B)).toEqual([['base', true]]);
      const templatesB = cacheEntries(cacheB).templates;
      await buildTemplate(A, name, `FROM base\nRUN echo ${nonce} > /etc/tplcopy-marker\n`);

      // the manifest: the template's directory, the chain below its disk, kernel and initrd
      const mr = await req(A, 'GET', `/v1/artifacts/templates/${name}/manifest`);
      expect(mr.status, JSON.stringify(mr.json)).toBe(200);
      const m = mr.json as unknown as TemplateManifest;
      expect(m).toMatchObject({ name, version: 1, cacheDir: cacheA, dir: `templates/${name}-${m.key}` });
      const paths = m.files.map((f) => f.path);
      for (const f of ['template.json', 'mem', 'state', 'disk.qcow2']) expect(paths).toContain(`${m.dir}/${f}`);
      expect(paths.some((p) => /^templates\/base-[0-9a-f]{16}\/disk\.qcow2$/.test(p))).toBe(true);
      expect(paths.some((p) => p.startsWith('build/layers/'))).toBe(true);
      expect(paths.filter((p) => /^images\/[^/]+\/(vmlinux|initrd\.cpio|rootfs\.qcow2)$/.test(p))).toHaveLength(3);
      for (const f of m.files) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
      const grant = templateGrant(keyA, name, 600_000);
      const state = m.files.find((f) => f.path === `${m.dir}/state`)!;
      // a file of the manifest, with the grant
      const sr = await req(A, 'GET', `/v1/artifacts/templates/${name}/files/${state.path}`, { auth: `Grant ${grant}` });
      expect([sr.status, sr.buf.length]).toEqual([200, state.bytes]);

      // what the file route refuses: paths out of the cache dir, cache files that are not the template's
      expect(code(await req(A, 'GET', `/v1/artifacts/templates/${name}/files/..%2F..%2F..%2Fetc%2Fpasswd`))).toEqual([400, 'invalid_path']);
      expect(code(await rawGet(A, `/v1/artifacts/templates/${name}/files/${m.dir}/../../../../etc/passwd`))).toEqual([400, 'invalid_path']);
      expect(code(await req(A, 'GET', `/v1/artifacts/templates/${name}/files/%2Fetc%2Fpasswd`))).toEqual([400, 'invalid_path']);
      expect(code(await req(A, 'GET', `/v1/artifacts/templates/${name}/files/templates/${name}.json`))).toEqual([404, 'file_not_found']);
      expect(code(await req(A, 'GET', `/v1/artifacts/templates/base/files/${state.path}`))).toEqual([404, 'file_not_found']);
      // an unknown template, here and through an import
      expect(code(await req(A, 'GET', '/v1/artifacts/templates/no-such-template/manifest'))).toEqual([404, 'template_not_found']);
      expect(code(await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name: 'no-such-template', source: A.url, grant: templateGrant(keyA, 'no-such-template', 60_000) } }))).toEqual([
        404,
        'template_not_found',
      ]);
      // grants: another key's, expired, another template's, a snapshot's; none on the import route
      const manifestWith = (g: string) => req(A, 'GET', `/v1/artifacts/templates/${name}/manifest`, { auth: `Grant ${g}` });
      expect(code(await manifestWith(templateGrant(apiKeyDigestHex(B.key), name, 60_000)))).toEqual([401, 'grant_invalid']);
      expect(code(await manifestWith(templateGrant(keyA, name, -1)))).toEqual([401, 'grant_expired']);
      expect(code(await manifestWith(templateGrant(keyA, 'base', 60_000)))).toEqual([403, 'grant_forbidden']);
      expect(code(await manifestWith(snapshotGrant(keyA, 'snap_0000000000000000', 60_000)))).toEqual([403, 'grant_forbidden']);
      expect(code(await req(A, 'GET', `/v1/artifacts/templates/${name}/files/${state.path}`, { auth: `Grant ${templateGrant(keyA, 'base', 60_000)}` }))).toEqual([403, 'grant_forbidden']);
      const refused = await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name, source: A.url, grant: templateGrant(apiKeyDigestHex(B.key), name, 60_000) } });
      expect([...code(refused), refused.json.error.details.sourceCode]).toEqual([502, 'artifact_source_refused', 'grant_invalid']);
      expect(code(await req(B, 'POST', '/v1/artifacts/templates/import', { auth: `Grant ${grant}`, body: { name, source: A.url, grant } }))).toEqual([401, 'unauthorized']);
      expect(cacheEntries(cacheB)).toEqual({ templates: templatesB, staging: [] });

      // another VM profile: refused before anything moves
      const inc = await req(C, 'POST', '/v1/artifacts/templates/import', { body: { name, source: A.url, grant } });
      expect(code(inc)).toEqual([409, 'template_incompatible']);
      expect(inc.json.error.details.mismatches.map((x: { field: string }) => x.field)).toEqual(['cpuModel']);
      expect(cacheEntries(cacheC)).toEqual({ templates: [], staging: [] });

      // a file of A that no longer has its manifest's digest: refused, nothing installed on B
      const untamper = tamper(path.join(cacheA, state.path), 4096);
      try {
        const bad = await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name, source: A.url, grant } });
        expect([...code(bad), bad.json.error.details.path]).toEqual([502, 'artifact_digest_mismatch', state.path]);
      } finally {
        untamper();
      }
      expect(cacheEntries(cacheB)).toEqual({ templates: templatesB, staging: [] });
      expect(await namesOn(B)).toEqual([['base', true]]);

      // the import
      const ir = await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name, source: A.url, grant } });
      expect(ir.status, JSON.stringify(ir.json)).toBe(200);
      expect(ir.json).toMatchObject({ name, version: 1, key: m.key, filesFetched: m.files.length, filesReused: 0 });
      console.log(`template copy: ${m.files.length} files, ${(ir.json.bytesFetched / 1048576).toFixed(1)} MiB moved`);
      expect(ir.json.bytesFetched).toBe(m.files.reduce((s, f) => s + f.bytes, 0));
      expect(cacheEntries(cacheB).staging).toEqual([]);
      // B lists it (its fingerprint too), its chain names B's cache only
      expect((await namesOn(B)).sort()).toEqual([['base', true], [name, true]]);
      const local = (await req(B, 'GET', '/v1/hosts/local')).json as { fingerprint: { templates: Array<{ name: string; key: string }> } };
      expect(local.fingerprint.templates.find((t) => t.name === name)?.key).toBe(m.key);
      const info = JSON.parse(fs.readFileSync(path.join(cacheB, m.dir, 'template.json'), 'utf8')) as Record<string, unknown>;
      expect(JSON.stringify(info)).not.toContain(cacheA + '/');
      const chain = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--backing-chain', '--output=json', path.join(cacheB, m.dir, 'disk.qcow2')], { encoding: 'utf8' })) as Array<{ filename: string }>;
      expect(chain.length).toBeGreaterThan(2);
      for (const c of chain) expect(c.filename.startsWith(cacheB + '/'), c.filename).toBe(true);
      // it rests on A's base bytes, brought along under names of their own: B's base is untouched
      const baseDisk = m.files.find((f) => /^templates\/base-[0-9a-f]{16}\/disk\.qcow2$/.test(f.path))!.path;
      expect(chain.map((c) => c.filename)).not.toContain(path.join(cacheB, baseDisk));
      expect(chain.some((c) => c.filename.startsWith(path.join(cacheB, `${path.dirname(baseDisk)}~`)))).toBe(true);
      expect(sha256(path.join(cacheB, baseDisk))).toBe(baseB);

      // a sandbox of it on B has what its build wrote
      const s = await Sandbox.create({ apiUrl: B.url, apiKey: B.key, template: name });
      open.push(s);
      expect((await s.commands.run('cat /etc/tplcopy-marker')).stdout.trim()).toBe(nonce);

      // again: nothing moves
      const again = await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name, source: A.url, grant } });
      expect([again.status, again.json.filesFetched, again.json.bytesFetched, again.json.version]).toEqual([200, 0, 0, 1]);

      // a second template of the same lineage: only its own directory and its new layer move
      const name2 = `${name}-2`;
      names.push(name2);
      await buildTemplate(A, name2, `FROM ${name}\nRUN echo second > /etc/tplcopy-second\n`);
      const m2 = (await req(A, 'GET', `/v1/artifacts/templates/${name2}/manifest`)).json as unknown as TemplateManifest;
      const ir2 = await req(B, 'POST', '/v1/artifacts/templates/import', { body: { name: name2, source: A.url, grant: templateGrant(keyA, name2, 600_000) } });
      expect(ir2.status, JSON.stringify(ir2.json)).toBe(200);
      const own2 = m2.files.filter((f) => f.path.startsWith(`${m2.dir}/`) || !m.files.some((g) => g.path === f.path));
      console.log(`second template: ${ir2.json.filesFetched} of ${m2.files.length} files, ${(ir2.json.bytesFetched / 1048576).toFixed(1)} MiB moved`);
      expect([ir2.json.filesFetched, ir2.json.filesReused]).toEqual([own2.length, m2.files.length - own2.length]);
      const s2 = await Sandbox.create({ apiUrl: B.url, apiKey: B.key, template: name2 });
      open.push(s2);
      expect((await s2.commands.run('cat /etc/tplcopy-marker /etc/tplcopy-second')).stdout.split('\n').slice(0, 2)).toEqual([nonce, 'second']);
    } finally {
      for (const s of open) await s.kill().catch(() => {});
      for (const n of names) await req(A, 'DELETE', `/v1/templates/${n}`);
    }
  }, 900_000);
});
