import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, sign } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { run } from '@nullspace/runtime';

/**
 * What test/oci.test.ts imports from: real Docker registries (Debian's `docker-registry`) on
 * loopback ports, a bearer-token endpoint for one of them, and test images built here with `umoci`
 * from Debian packages (the base recipe's debootstrap tree, the host's static busybox), pushed with
 * `skopeo`.
 */

export const TEST_USER = 'tester';
export const TEST_PASSWORD = 's3cret-pw';
/** bcrypt of TEST_PASSWORD (cost 5): docker-registry's htpasswd takes bcrypt only. */
const TEST_PASSWORD_BCRYPT = '$2b$05$82BJYIjNuD1jCSped1MH8uZD8XUzwcXBIPNqST1SOFCbEWwskewkq';

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

export interface Registry {
  /** host:port */
  host: string;
  stop(): Promise<void>;
}

/**
 * A docker-registry of its own (storage and config under `dir`) on a loopback port, plain HTTP:
 * anonymous, with htpasswd basic auth, or with bearer tokens from `token` (a TokenServer's realm).
 */
export async function startRegistry(dir: string, auth: { kind: 'none' } | { kind: 'basic' } | { kind: 'token'; token: TokenServer }): Promise<Registry> {
  fs.mkdirSync(path.join(dir, 'storage'), { recursive: true });
  const port = await freePort();
  const lines = ['version: 0.1', 'log: { level: warn, accesslog: { disabled: true } }', 'storage:', `  filesystem: { rootdirectory: ${path.join(dir, 'storage')} }`, 'http:', `  addr: 127.0.0.1:${port}`];
  if (auth.kind === 'basic') {
    fs.writeFileSync(path.join(dir, 'htpasswd'), `${TEST_USER}:${TEST_PASSWORD_BCRYPT}\n`);
    lines.push('auth:', `  htpasswd: { realm: nullspace-test, path: ${path.join(dir, 'htpasswd')} }`);
  } else if (auth.kind === 'token') {
    lines.push('auth:', '  token:', `    realm: ${auth.token.realm}`, `    service: ${auth.token.service}`, `    issuer: ${auth.token.issuer}`, `    rootcertbundle: ${auth.token.certFile}`);
  }
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(config, lines.join('\n') + '\n');
  const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry did not start: ${fs.readFileSync(path.join(dir, 'registry.log'), 'utf8').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { host: `127.0.0.1:${port}`, stop };
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Token requests answered: [user or '', granted scopes]. */
  requests: Array<{ user: string; granted: boolean }>;
  stop(): Promise<void>;
}

/**
 * A minimal bearer-token endpoint (the Docker token protocol): GET <realm>?service=&scope= with
 * basic credentials answers a JWT (RS256, its certificate in the `x5c` header, the certificate in
 * the registry's rootcertbundle) granting the scopes asked for; wrong or missing credentials get a
 * 401. The registry checks the token; skopeo does the whole dance (challenge, token, retry) itself.
 */
export async function startTokenServer(dir: string): Promise<TokenServer> {
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, 'token.key');
  const certFile = path.join(dir, 'token.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=nullspace-test-token']);
  const key = fs.readFileSync(keyFile, 'utf8');
  const der = Buffer.from(
    fs
      .readFileSync(certFile, 'utf8')
      .replace(/-----(BEGIN|END) CERTIFICATE-----/g, '')
      .replace(/\s/g, ''),
    'base64',
  );
  const service = 'nullspace-test-registry';
  const issuer = 'nullspace-test-issuer';
  const requests: TokenServer['requests'] = [];
  const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const [user, password] = basic ? Buffer.from(basic, 'base64').toString().split(':') : ['', ''];
    const ok = user === TEST_USER && password === TEST_PASSWORD;
    requests.push({ user: user ?? '', granted: ok });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }));
      return;
    }
    const access = url.searchParams.getAll('scope').flatMap((scope) => {
      const m = /^([a-z]+):(.+):([a-z*,]+)$/.exec(scope);
      return m ? [{ type: m[1], name: m[2], actions: m[3]!.split(',') }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [der.toString('base64')] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: user, aud: service, exp: now + 600, nbf: now - 60, iat: now, jti: randomBytes(8).toString('hex'), access }));
    const token = `${header}.${claims}.${b64url(sign('sha256', Buffer.from(`${header}.${claims}`), key))}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** skopeo copy from this test's OCI layout to a registry (plain HTTP), with credentials or none. */
export async function push(layout: string, tag: string, dest: string, opts: { creds?: boolean; all?: boolean } = {}): Promise<void> {
  await run('skopeo', [
    '--insecure-policy',
    'copy',
    '-q',
    ...(opts.all ? ['--all'] : []),
    '--dest-tls-verify=false',
    ...(opts.creds ? ['--dest-creds', `${TEST_USER}:${TEST_PASSWORD}`] : ['--dest-no-creds']),
    `oci:${layout}:${tag}`,
    `docker://${dest}`,
  ]);
}

/** A tree of the host's static busybox and its applet links, nothing else: no bash, no /etc. */
export async function busyboxTree(dir: string): Promise<void> {
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  fs.chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  const { stdout } = await run('/bin/busybox', ['--list']);
  for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox')) fs.symlinkSync('busybox', path.join(dir, 'bin', applet));
}

/** A Debian tree: the base recipe's debootstrap tarball without docs, locales, Python and git (smaller, still Debian: dpkg, apt, bash). */
export async function debianTree(dir: string, tarball: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const drop = ['usr/share/doc', 'usr/share/man', 'usr/share/locale', 'usr/share/info', 'usr/share/perl', 'usr/share/zoneinfo', 'usr/lib/python3*', 'usr/bin/python3*', 'usr/lib/git-core', 'usr/share/git-core', 'usr/share/gitweb', 'var/lib/apt/lists', 'var/cache/apt', 'usr/lib/x86_64-linux-gnu/perl*'];
  await run('tar', ['--numeric-owner', '-C', dir, '-xf', tarball, ...drop.map((d) => `--exclude=./${d}`)]);
}

/** umoci in `layout`. */
export function umoci(...args: string[]): Promise<unknown> {
  return run('umoci', args);
}

/**
 * Adds an image index (manifest list) `tag` to an OCI layout, over images of the layout given as
 * [tag, architecture] in that order.
 */
export function addIndex(layout: string, tag: string, entries: Array<[string, string]>): void {
  const indexFile = path.join(layout, 'index.json');
  const index = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }> };
  const byTag = new Map(index.manifests.map((m) => [m.annotations?.['org.opencontainers.image.ref.name'], m]));
  const blob = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: entries.map(([t, architecture]) => {
        const m = byTag.get(t);
        if (!m) throw new Error(`no image ${t} in ${layout}`);
        return { mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { architecture, os: 'linux' } };
      }),
    }),
  );
  const digest = createHash('sha256').update(blob).digest('hex');
  fs.writeFileSync(path.join(layout, 'blobs', 'sha256', digest), blob);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${digest}`, size: blob.length, annotations: { 'org.opencontainers.image.ref.name': tag } });
  fs.writeFileSync(indexFile, JSON.stringify(index));
}
