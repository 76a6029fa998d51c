import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox, type SandboxOpts } from 'nullspace';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { leftoverQemu } from './env.js';
import { killAll } from './helpers.js';
import { cli, exited, tempDataDir } from './servers.js';

/**
 * Egress rules (docs/api.md "Egress rules"): what a guest may connect to, by address and by name.
 *
 * The destinations are the test's own: a network namespace with two addresses (10.213.77.2 and
 * .3, a range nothing else on the host uses) serving HTTP on 80 and HTTPS on 443 (a certificate the
 * test makes, several names in its SAN), answering `<Host> via <local address>`. The guest names
 * them with `curl --resolve name:port:ip`: the SNI and Host are the name, the destination the address.
 * Traffic goes only to that namespace and to this host's own addresses.
 *
 * The sandboxes run on a server of the file's own with a uid range of its own (so its host firewall
 * tables are its own: servers of other versions on this host replace the default range's guard).
 */
const UID_BASE = 3_213_000;
const UID_COUNT = 1000;

const NS_NET = '10.213.77';
const IP_A = `${NS_NET}.2`;
const IP_B = `${NS_NET}.3`;
const METADATA = '169.254.170.2'; // (a metadata service's address: ECS task metadata; isolation.test.ts uses 169.254.169.254)

const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0)) {
    try {
      await c();
    } catch (err) {
      console.error('egress test cleanup:', err);
    }
  }
});

/** The namespace, its veth link, its servers; everything removed when the file ends (or fails). */
async function destinations(): Promise<void> {
  const tag = randomBytes(3).toString('hex');
  const ns = `nseg-${tag}`;
  const hostSide = `negh${tag}`;
  const nsSide = `negn${tag}`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  ip('netns', 'add', ns);
  cleanups.push(() => {
    try {
      ip('link', 'del', hostSide);
    } catch {
      /* gone with the namespace */
    }
    ip('netns', 'del', ns);
  });
  ip('link', 'add', hostSide, 'type', 'veth', 'peer', 'name', nsSide, 'netns', ns);
  ip('addr', 'add', `${NS_NET}.1/24`, 'dev', hostSide);
  // a metadata service's address, routed to the namespace (point to point), to probe that rules cannot open it
  ip('addr', 'add', '169.254.170.1', 'peer', METADATA, 'dev', hostSide);
  ip('link', 'set', hostSide, 'up');
  ip('-n', ns, 'addr', 'add', `${IP_A}/24`, 'dev', nsSide);
  ip('-n', ns, 'addr', 'add', `${IP_B}/24`, 'dev', nsSide);
  ip('-n', ns, 'addr', 'add', METADATA, 'peer', '169.254.170.1', 'dev', nsSide);
  ip('-n', ns, 'link', 'set', nsSide, 'up');
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-egress-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=a.example.test',
      '-addext', 'subjectAltName=DNS:a.example.test,DNS:b.example.test,DNS:*.w.example.test,DNS:w.example.test,DNS:other.test',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ],
    { stdio: 'pipe' },
  );
  const server = `
    const fs = require('fs'), http = require('http'), https = require('https'), net = require('net');
    // a protocol where the server speaks first (as SSH, SMTP): a banner, then an echo of one line
    net.createServer((c) => { c.on('error', () => {}); c.write('BANNER ' + c.localAddress + '\\n'); c.once('data', (d) => c.end('ECHO ' + d)); }).listen(2222, '0.0.0.0');
    const answer = (q, s) => s.end((q.headers.host || '-').split(':')[0] + ' via ' + q.socket.localAddress);
    let n = 0; const up = () => { if (++n === 2) console.log('ready'); };
    http.createServer(answer).listen(80, '0.0.0.0', up);
    https.createServer({ key: fs.readFileSync(${JSON.stringify(path.join(dir, 'key.pem'))}), cert: fs.readFileSync(${JSON.stringify(path.join(dir, 'cert.pem'))}) }, answer).listen(443, '0.0.0.0', up);`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.unshift(async () => {
    child.kill('SIGKILL');
    await exited(child);
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the namespace's servers exited with ${code}`)));
  });
}

/** A listener on one of this host's own addresses (not loopback): no rule may open it. */
async function hostListener(): Promise<{ ip: string; port: number }> {
  const addr = Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith(NS_NET) && !a.address.startsWith('169.254.'));
  if (!addr) throw new Error('no non-loopback IPv4 address on this host');
  const server = http.createServer((_q, s) => s.end('host-listener'));
  await new Promise<void>((resolve) => server.listen(0, addr.address, () => resolve()));
  cleanups.unshift(() => new Promise((r) => server.close(r)));
  return { ip: addr.address, port: (server.address() as { port: number }).port };
}

/**
 * Run in the guest: each probe is one curl (in parallel); prints {label: "ok <body>" | "reset <curl
 * message>" | "refused <message>" | "timeout" | "error <rc> <message>"}. "reset" and "refused" are
 * the fast, clear refusals (a TCP reset); a refusal that hangs shows as "timeout".
 */
const PROBE = `
import concurrent.futures, json, subprocess, sys
def probe(p):
    label, url, resolve = p
    args = ["curl", "-sS", "-k", "--max-time", "30", "--connect-timeout", "30"]
    if resolve:
        args += ["--resolve", resolve]
    r = subprocess.run(args + [url], capture_output=True, text=True)
    msg = r.stderr.strip().replace("\\n", " ")
    if r.returncode == 0:
        return label, "ok " + r.stdout
    if r.returncode == 28:
        return label, "timeout " + msg
    if r.returncode == 7 and "timed out" not in msg.lower():
        return label, "refused " + msg
    if r.returncode in (35, 56, 52) and ("reset" in msg.lower() or "closed" in msg.lower() or r.returncode == 52):
        return label, "reset %d %s" % (r.returncode, msg)
    return label, "error %d %s" % (r.returncode, msg)
probes = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(probes)) as ex:
    print(json.dumps(dict(ex.map(probe, probes))))
`;

type Probe = [label: string, url: string, resolve: string | null];
const https = (name: string, ip: string): Probe => [`https ${name}@${ip}`, `https://${name}/`, `${name}:443:${ip}`];
const httpHost = (name: string, ip: string): Probe => [`http ${name}@${ip}`, `http://${name}/`, `${name}:80:${ip}`];
const plain = (ip: string, port = 80): Probe => [`http ${ip}:${port}`, `http://${ip}:${port}/`, null];

async function probe(s: Sandbox, probes: Probe[]): Promise<Record<string, string>> {
  await s.files.write('/tmp/egress-probe.py', PROBE);
  const r = await s.commands.run(`python3 /tmp/egress-probe.py '${JSON.stringify(probes)}'`, { timeoutMs: 120_000 });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, string>;
}

/** What an allowed probe answers: the name it asked for, served at the address it went to. */
const reached = (name: string, ip: string) => `ok ${name} via ${ip}`;
/** A refusal the guest sees at once: a reset or a refused connection, never a timeout. */
const REFUSED = /^(reset|refused) /;

let server: RunningServer;
let dataDir = '';
const key = `egress-${randomBytes(12).toString('hex')}`;
const conn = () => ({ apiUrl: server.url, apiKey: key });

function serverConfig() {
  return loadConfig(
    {
      ...process.env,
      NULLSPACE_LOG_LEVEL: 'warn',
      NULLSPACE_API_KEY: key,
      NULLSPACE_VM_UID_BASE: String(UID_BASE),
      NULLSPACE_VM_UID_COUNT: String(UID_COUNT),
      // (one warm VM: creates from base take it, their rules are installed when it becomes theirs)
      NULLSPACE_WARM_POOL: '1',
      NULLSPACE_SNAPSHOT_POOL: '0',
      NULLSPACE_FIREWALL_CHECK_MS: '500',
    },
    { dataDir, port: 0 },
  );
}

async function api(method: string, p: string, body?: unknown): Promise<Response> {
  return fetch(server.url + p, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** A sandbox of the file's server, killed when the test ends. */
async function sandbox(opts: SandboxOpts = {}): Promise<Sandbox> {
  const sbx = await Sandbox.create({ ...conn(), ...opts });
  onTestFinished(() => sbx.kill().catch(() => {}));
  return sbx;
}

async function networkOf(s: Sandbox): Promise<{ allowOut: string[]; denyOut: string[]; refusedConnections: number }> {
  const res = await api('GET', `/v1/sandboxes/${s.sandboxId}/network`);
  expect(res.status).toBe(200);
  return (await res.json()) as { allowOut: string[]; denyOut: string[]; refusedConnections: number };
}

async function egressSandbox(network: { allowOut?: string[]; denyOut?: string[] }): Promise<Sandbox> {
  return sandbox({ network });
}

describe('egress rules', () => {
  beforeAll(async () => {
    await destinations();
    dataDir = tempDataDir();
    cleanups.push(() => {
      for (const pid of leftoverQemu(dataDir)) process.kill(pid, 'SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
      // the firewall tables of the file's uid range (no other server uses it)
      for (const t of [`nullspace_${UID_BASE}_${UID_COUNT}`, `nullspace_${UID_BASE}_${UID_COUNT}_egress`]) {
        try {
          execFileSync('nft', ['delete', 'table', 'inet', t], { stdio: 'pipe' });
        } catch {
          /* not made */
        }
      }
    });
    server = await startServer(serverConfig());
    cleanups.unshift(() => server?.close());
  });

  it('the control: without rules, a guest reaches every test destination by address and by name', async () => {
    const s = await sandbox();
    try {
      const got = await probe(s, [https('a.example.test', IP_A), httpHost('other.test', IP_B), plain(IP_A)]);
      expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
      expect(got[`http other.test@${IP_B}`]).toBe(reached('other.test', IP_B));
      expect(got[`http ${IP_A}:80`]).toBe(reached(IP_A, IP_A));
      expect((await networkOf(s)).refusedConnections).toBe(0);
    } finally {
      await killAll(s);
    }
  });

  it('by address: a denied CIDR is refused at once (a reset, not a timeout), the rest allowed; refusals are counted', async () => {
    const s = await egressSandbox({ denyOut: [`${IP_B}/32`] });
    try {
      const info = await s.getInfo();
      expect(info.network.denyOut).toEqual([IP_B]);
      const got = await probe(s, [plain(IP_A), plain(IP_B), https('a.example.test', IP_B)]);
      expect(got[`http ${IP_A}:80`]).toBe(reached(IP_A, IP_A));
      expect(got[`http ${IP_B}:80`]).toMatch(REFUSED);
      expect(got[`https a.example.test@${IP_B}`]).toMatch(REFUSED);
      expect((await networkOf(s)).refusedConnections).toBeGreaterThanOrEqual(2);
    } finally {
      await killAll(s);
    }
  });

  it('an allow list of names (SNI for HTTPS, Host for HTTP, exact and wildcard) allows them though their address is not listed, and refuses everything else', async () => {
    const s = await egressSandbox({ allowOut: ['a.example.test', '*.w.example.test'] });
    try {
      const got = await probe(s, [
        https('a.example.test', IP_A),
        httpHost('a.example.test', IP_B),
        https('x.w.example.test', IP_A),
        httpHost('deep.x.w.example.test', IP_A),
        // the wildcard is its subdomains only
        https('w.example.test', IP_A),
        https('b.example.test', IP_A),
        httpHost('other.test', IP_A),
        // no name at all: decided by address (not listed)
        plain(IP_A),
      ]);
      expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
      expect(got[`http a.example.test@${IP_B}`]).toBe(reached('a.example.test', IP_B));
      expect(got[`https x.w.example.test@${IP_A}`]).toBe(reached('x.w.example.test', IP_A));
      expect(got[`http deep.x.w.example.test@${IP_A}`]).toBe(reached('deep.x.w.example.test', IP_A));
      for (const k of [`https w.example.test@${IP_A}`, `https b.example.test@${IP_A}`, `http other.test@${IP_A}`, `http ${IP_A}:80`]) {
        expect(got[k], k).toMatch(REFUSED);
      }
      expect((await networkOf(s)).refusedConnections).toBeGreaterThanOrEqual(4);
    } finally {
      await killAll(s);
    }
  });

  it('precedence: a deny rule wins over any allow rule, however specific the allow rule is', async () => {
    const s = await egressSandbox({ allowOut: [`${NS_NET}.0/24`, 'a.example.test'], denyOut: ['*.example.test', IP_B] });
    try {
      const got = await probe(s, [https('a.example.test', IP_A), httpHost('b.example.test', IP_A), https('other.test', IP_A), httpHost('other.test', IP_B), plain(IP_A)]);
      // allowed by name and by address, denied by the wildcard
      expect(got[`https a.example.test@${IP_A}`]).toMatch(REFUSED);
      expect(got[`http b.example.test@${IP_A}`]).toMatch(REFUSED);
      // allowed by address, no deny matches
      expect(got[`https other.test@${IP_A}`]).toBe(reached('other.test', IP_A));
      expect(got[`http ${IP_A}:80`]).toBe(reached(IP_A, IP_A));
      // allowed by the CIDR, denied by the more general... no: by the address itself
      expect(got[`http other.test@${IP_B}`]).toMatch(REFUSED);
    } finally {
      await killAll(s);
    }
  });

  it('changed on a running sandbox: new connections follow the new rules at once', async () => {
    const s = await sandbox();
    try {
      expect((await probe(s, [https('other.test', IP_A)]))[`https other.test@${IP_A}`]).toBe(reached('other.test', IP_A));
      let net = await s.updateNetwork({ denyOut: ['other.test'] });
      expect(net).toMatchObject({ allowOut: [], denyOut: ['other.test'] });
      let got = await probe(s, [https('other.test', IP_A), https('a.example.test', IP_A)]);
      expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
      expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
      net = await s.updateNetwork({ allowOut: [IP_B] });
      got = await probe(s, [https('other.test', IP_A), plain(IP_B)]);
      expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
      expect(got[`http ${IP_B}:80`]).toBe(reached(IP_B, IP_B));
      net = await s.updateNetwork({});
      got = await probe(s, [https('other.test', IP_A), plain(IP_A)]);
      expect(got[`https other.test@${IP_A}`]).toBe(reached('other.test', IP_A));
      expect(got[`http ${IP_A}:80`]).toBe(reached(IP_A, IP_A));
      // the refusals of the earlier rules stay counted
      expect(net.refusedConnections).toBeGreaterThanOrEqual(2);
      expect((await s.getInfo()).network).toMatchObject({ allowOut: [], denyOut: [] });
    } finally {
      await killAll(s);
    }
  });

  it('the CLI: sandbox create --allow-out/--deny-out, sandbox network (print, --set)', async () => {
    const srv = { url: server.url, key };
    const made = await cli(srv, ['sandbox', 'create', '--deny-out', IP_B, '--allow-out', '*.example.test', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const id = (JSON.parse(made.stdout) as { sandboxId: string }).sandboxId;
    onTestFinished(async () => {
      await Sandbox.kill(id, conn()).catch(() => {});
    });
    expect(JSON.parse((await cli(srv, ['sandbox', 'network', id])).stdout)).toEqual({ allowOut: ['*.example.test'], denyOut: [IP_B], refusedConnections: 0 });
    const set = await cli(srv, ['sandbox', 'network', id, '--set', '--deny-out', 'other.test']);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({ allowOut: [], denyOut: ['other.test'], refusedConnections: 0 });
    const s = await Sandbox.connect(id, conn());
    const got = await probe(s, [https('other.test', IP_A), plain(IP_B)]);
    expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
    expect(got[`http ${IP_B}:80`]).toBe(reached(IP_B, IP_B));
    const bad = await cli(srv, ['sandbox', 'network', id, '--deny-out', 'x.test']);
    expect(bad.code).not.toBe(0);
  });

  it('a protocol where the server speaks first passes a name rule (through the proxy), its first bytes still checked', async () => {
    const s = await egressSandbox({ denyOut: ['other.test'] });
    const r = await s.commands.run(
      `python3 -c '
import socket
for line in ["hello", "GET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n"]:
    c = socket.create_connection(("${IP_A}", 2222), timeout=30)
    banner = c.recv(100).decode().strip()
    c.sendall(line.encode())
    try:
        print(banner, "|", c.recv(100).decode().strip().splitlines()[0] if True else "")
    except (ConnectionResetError, IndexError) as e:
        print(banner, "|", "reset")
'`,
      { timeoutMs: 120_000 },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const [first, second] = r.stdout.trim().split('\n');
    expect(first).toBe(`BANNER ${IP_A} | ECHO hello`);
    // the banner came, then a request naming a denied host: reset before it left
    expect(second).toBe(`BANNER ${IP_A} | reset`);
  });

  it('bad rules are a 400 invalid_network_rule naming the rule', async () => {
    for (const rule of ['10.0.0.1/33', '10.0.0.1/8', 'exa mple.com', '*', 'http://x.com', 'a..b']) {
      const res = await api('POST', '/v1/sandboxes', { network: { denyOut: ['ok.example', rule] } });
      expect(res.status, rule).toBe(400);
      const body = (await res.json()) as { error: { code: string; details: { field: string } } };
      expect(body.error.code, rule).toBe('invalid_network_rule');
      expect(body.error.details.field).toBe('network.denyOut[1]');
    }
  });

  it('rules are kept by a fork (its child) and across hibernate and resume, refusals counted over the whole life', async () => {
    const s = await egressSandbox({ denyOut: ['other.test', IP_B] });
    let child: Sandbox | undefined;
    try {
      const check = async (sbx: Sandbox) => {
        const got = await probe(sbx, [https('other.test', IP_A), https('a.example.test', IP_A), plain(IP_B)]);
        expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
        expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
        expect(got[`http ${IP_B}:80`]).toMatch(REFUSED);
      };
      await check(s);
      child = await s.fork();
      expect((await child.getInfo()).network).toMatchObject({ allowOut: [], denyOut: ['other.test', IP_B] });
      await check(child);
      const before = (await networkOf(s)).refusedConnections;
      expect(before).toBeGreaterThanOrEqual(2);
      await s.hibernate();
      expect((await networkOf(s)).refusedConnections).toBe(before);
      const resumed = await Sandbox.connect(s.sandboxId, conn());
      await check(resumed);
      expect((await networkOf(s)).refusedConnections).toBeGreaterThanOrEqual(before + 2);
    } finally {
      await killAll(s, child);
    }
  });

  it('a sandbox from a reusable snapshot has the snapshot\'s rules unless it is given its own', async () => {
    const s = await egressSandbox({ allowOut: ['a.example.test'], denyOut: [IP_B] });
    const snap = await s.createSnapshot();
    let same: Sandbox | undefined;
    let own: Sandbox | undefined;
    try {
      same = await sandbox({ snapshotId: snap.id });
      expect((await same.getInfo()).network).toMatchObject({ allowOut: ['a.example.test'], denyOut: [IP_B] });
      const got = await probe(same, [https('a.example.test', IP_A), https('other.test', IP_A)]);
      expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
      expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
      own = await sandbox({ snapshotId: snap.id, network: { denyOut: ['a.example.test'] } });
      expect((await own.getInfo()).network).toMatchObject({ allowOut: [], denyOut: ['a.example.test'] });
    } finally {
      await killAll(same, own);
      await snap.delete().catch(() => {});
    }
  });

  it('rules survive a server restart (the restarted server re-adopts the VM and applies them again)', async () => {
    const s = await egressSandbox({ allowOut: ['a.example.test'], denyOut: [IP_B] });
    onTestFinished(async () => {
      await Sandbox.kill(s.sandboxId, conn()).catch(() => {});
    });
    const check = async (sbx: Sandbox) => {
      const got = await probe(sbx, [https('a.example.test', IP_A), https('other.test', IP_A), plain(IP_B)]);
      expect(got[`https a.example.test@${IP_A}`]).toBe(reached('a.example.test', IP_A));
      expect(got[`https other.test@${IP_A}`]).toMatch(REFUSED);
      expect(got[`http ${IP_B}:80`]).toMatch(REFUSED);
    };
    await check(s);
    const before = (await networkOf(s)).refusedConnections;
    expect(before).toBeGreaterThanOrEqual(2);
    await server.close();
    server = await startServer(serverConfig());
    const again = await Sandbox.connect(s.sandboxId, conn());
    await check(again);
    expect(await networkOf(s)).toEqual({ allowOut: ['a.example.test'], denyOut: [IP_B], refusedConnections: expect.any(Number) });
    expect((await networkOf(s)).refusedConnections).toBeGreaterThanOrEqual(before + 2);
  });

  it('a flush of the egress table (an nftables reload) is repaired with the running sandboxes\' rules', async () => {
    const s = await egressSandbox({ denyOut: ['other.test', IP_B] });
    const refusedNow = async () => {
      const got = await probe(s, [https('other.test', IP_A), plain(IP_B)]);
      return REFUSED.test(got[`https other.test@${IP_A}`]!) && REFUSED.test(got[`http ${IP_B}:80`]!);
    };
    expect(await refusedNow()).toBe(true);
    execFileSync('nft', ['delete', 'table', 'inet', `nullspace_${UID_BASE}_${UID_COUNT}_egress`], { stdio: 'pipe' });
    // (the check runs every 500 ms on this server)
    for (const deadline = Date.now() + 30_000; !(await refusedNow()); ) {
      if (Date.now() > deadline) throw new Error('the egress rules were not put back');
      await new Promise((r) => setTimeout(r, 500));
    }
  });

  it('this host and the metadata range stay unreachable whatever the rules allow', async () => {
    const host = await hostListener();
    // the controls: both listeners answer (from this host)
    expect(await (await fetch(`http://${host.ip}:${host.port}/`)).text()).toBe('host-listener');
    expect(await (await fetch(`http://${METADATA}/`)).text()).toBe(`${METADATA} via ${METADATA}`);
    for (const network of [
      { allowOut: ['0.0.0.0/0', '169.254.0.0/16', `${host.ip}/32`] },
      // with a name rule too: connections go through the egress proxy
      { allowOut: ['0.0.0.0/0', '169.254.0.0/16', `${host.ip}/32`, 'a.example.test'], denyOut: ['other.test'] },
    ]) {
      const s = await egressSandbox(network);
      try {
        const got = await probe(s, [
          plain(host.ip, host.port),
          plain(METADATA),
          httpHost('a.example.test', METADATA),
          [`named host`, `http://a.example.test:${host.port}/`, `a.example.test:${host.port}:${host.ip}`],
          // the sandbox reaches what the rules allow (the probes above are not refused for another reason)
          https('a.example.test', IP_A),
        ]);
        expect(got[`https a.example.test@${IP_A}`], JSON.stringify(network)).toBe(reached('a.example.test', IP_A));
        for (const k of [`http ${host.ip}:${host.port}`, `http ${METADATA}:80`, `http a.example.test@${METADATA}`, 'named host']) {
          expect(got[k], `${k} with ${JSON.stringify(network)}`).toMatch(REFUSED);
        }
      } finally {
        await killAll(s);
      }
    }
  });
});
