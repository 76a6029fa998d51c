import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { loadConfig, startServer } from '@nullspace/server';
import { leftoverQemu } from './env.js';
import { ARCHIVE, conn, expectGuestReachesArchive, killAll, sandbox } from './helpers.js';
import { cleanupDataDir, exited, ownServer, tempDataDir, waitFor } from './servers.js';

/**
 * What a guest can reach. Every probe that must fail has a control: the same probe, from a sandbox
 * of a server without the firewall (NULLSPACE_NETWORK_ISOLATION=off), or from a place that is
 * allowed, reaches the same listener. A probe that cannot succeed anywhere would prove nothing.
 *
 * Listeners are the test's own: HTTP servers on this host's addresses (ephemeral ports), one in a
 * network namespace the test creates (for the metadata address), one in a sandbox. Traffic goes only
 * to this host's addresses and to that namespace.
 */

/** What the probe prints when it reached a nullspace server's port: a status line, or the console page (200 at /). */
const API_ANSWER = /^open (HTTP\/1\.[01] \d{3}|<!doctype html>)/;

/** Run in the guest: connects to each [host, port] at once (10 s each), prints {"host port": "open <reply>" | "closed <errno>"}. */
const PROBE = `
import concurrent.futures, errno, json, socket, sys
def probe(t):
    host, port = t
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: probe\\r\\n\\r\\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        head, _, body = data.decode("latin1").partition("\\r\\n\\r\\n")
        return "open " + (body if head.split(" ")[1:2] == ["200"] else head.split("\\r\\n")[0])
    except socket.timeout:
        return "closed timeout"
    except OSError as e:
        return "closed " + errno.errorcode.get(e.errno, str(e.errno))
targets = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(targets)) as ex:
    print(json.dumps(dict(zip(["%s %d" % tuple(t) for t in targets], ex.map(probe, targets)))))
`;

type Target = [host: string, port: number];

/** Probes `targets` from inside `s`: "host port" -> "open <body or status line>" | "closed <reason>". */
async function probe(s: Sandbox, targets: Target[]): Promise<Record<string, string>> {
  await s.files.write('/tmp/probe.py', PROBE);
  const r = await s.commands.run(`python3 /tmp/probe.py '${JSON.stringify(targets)}'`, { timeoutMs: 120_000 });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, string>;
}
const key = ([h, p]: Target) => `${h} ${p}`;

/** An HTTP listener that answers every request with `token`; closed when the test file ends. */
async function listener(host: string, token: string): Promise<number> {
  const server = http.createServer((_req, res) => res.end(token));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  listeners.push(server);
  return (server.address() as { port: number }).port;
}
const listeners: http.Server[] = [];
afterAll(async () => {
  await Promise.all(listeners.map((l) => new Promise((r) => l.close(r))));
});

/**
 * This host's addresses, as a guest would name them: loopback is reached through user-mode
 * networking's host alias (10.0.2.2 for 127.0.0.1; the guest's own 127.0.0.1 and ::1 are its own);
 * link-local addresses are left out (they name a link, and the guest's link is QEMU's virtual one).
 */
function hostAddresses(): Array<{ bind: string; guest: string }> {
  const out: Array<{ bind: string; guest: string }> = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv6' && a.address.toLowerCase().startsWith('fe80:')) continue;
      if (a.address === '127.0.0.1') out.push({ bind: a.address, guest: '10.0.2.2' });
      else if (a.address === '::1') out.push({ bind: a.address, guest: 'fec0::2' });
      else out.push({ bind: a.address, guest: a.address });
    }
  }
  return out;
}

/** A network namespace of the test's own that holds 169.254.169.254 (a metadata service's address), with a listener on port 80 there. */
async function metadataNamespace(token: string): Promise<Target> {
  const tag = randomBytes(3).toString('hex');
  const ns = `nsiso-${tag}`;
  const hostSide = `nsih${tag}`;
  const nsSide = `nsin${tag}`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  // what a killed run left: a namespace of this kind with no process in it (a live test's has its
  // listener) still routes 169.254.169.254 to itself, and would answer these probes in place of ours
  for (const line of ip('netns', 'list').toString().split('\n')) {
    const old = /^nsiso-([0-9a-f]{6})\b/.exec(line);
    if (!old || ip('netns', 'pids', `nsiso-${old[1]}`).toString().trim() !== '') continue;
    try {
      ip('link', 'del', `nsih${old[1]}`);
    } catch {
      /* gone with the namespace */
    }
    ip('netns', 'del', `nsiso-${old[1]}`);
  }
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
  // point to point: the host routes only 169.254.169.254 there
  ip('addr', 'add', '169.254.169.253', 'peer', '169.254.169.254', 'dev', hostSide);
  ip('link', 'set', hostSide, 'up');
  ip('-n', ns, 'addr', 'add', '169.254.169.254', 'peer', '169.254.169.253', 'dev', nsSide);
  ip('-n', ns, 'link', 'set', nsSide, 'up');
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `require('http').createServer((q, s) => s.end(${JSON.stringify(token)})).listen(80, '169.254.169.254', () => console.log('ready'))`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanups.unshift(async () => {
    child.kill('SIGKILL');
    await exited(child);
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the namespace's listener exited with ${code}`)));
  });
  return ['169.254.169.254', 80];
}
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** A listener inside `s` on port 8080 that answers `token`. */
async function guestListener(s: Sandbox, token: string): Promise<number> {
  await s.commands.run(
    `python3 -c 'import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"${token}")
s = http.server.HTTPServer(("0.0.0.0", 8080), H); open("/tmp/listening", "w").close(); s.serve_forever()'`,
    { background: true, timeoutMs: 0 },
  );
  await s.commands.run('while [ ! -e /tmp/listening ]; do sleep 0.1; done', { timeoutMs: 60_000 });
  return 8080;
}

describe('network isolation: a guest reaches no address of this host, no metadata service, no other sandbox', () => {
  const token = `ns-probe-${randomBytes(8).toString('hex')}`;
  /** [target as the guest names it, what answers there when it is reached] */
  const targets: Array<{ target: Target; answer: RegExp; what: string }> = [];
  let open: Sandbox;
  let control: { url: string; key: string };
  let peer: Sandbox;
  let peerPort: number;

  beforeAll(async () => {
    for (const a of hostAddresses()) targets.push({ target: [a.guest, await listener(a.bind, token)], answer: new RegExp(`^open ${token}$`), what: `a listener on ${a.bind}` });
    targets.push({ target: await metadataNamespace(token), answer: new RegExp(`^open ${token}$`), what: 'the metadata address (in a namespace of the test)' });
    // the suite server's API port (it listens on loopback): any HTTP answer means it was reached (a
    // status line, or for a 200 its body: the web console's page at /)
    targets.push({ target: ['10.0.2.2', Number(new URL(conn().apiUrl).port)], answer: API_ANSWER, what: "the suite server's API port" });
    // the control: a server without the firewall, whose sandboxes reach all of the above
    // (started here, not with ownServer: a hook has no test to tie cleanups to)
    const dataDir = tempDataDir();
    cleanups.push(() => {
      for (const pid of leftoverQemu(dataDir)) process.kill(pid, 'SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    });
    const ctlKey = `own-${randomBytes(12).toString('hex')}`;
    const config = loadConfig(
      { ...process.env, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: ctlKey, NULLSPACE_NETWORK_ISOLATION: 'off', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' },
      { dataDir, port: 0 },
    );
    const server = await startServer(config);
    cleanups.unshift(() => server.close());
    control = { url: server.url, key: ctlKey };
    open = await Sandbox.create({ apiUrl: server.url, apiKey: ctlKey });
    cleanups.unshift(() => open.kill().catch(() => {}));
    // another sandbox, with a listener of its own
    peer = await Sandbox.create({ ...conn(), metadata: { suite: 'nullspace-tests', role: 'peer' } });
    cleanups.unshift(() => killAll(peer));
    peerPort = await guestListener(peer, token);
  });

  it('the control: without the firewall, the same probes reach every listener (and the API port)', async () => {
    const got = await probe(open, [...targets.map((t) => t.target), ['10.0.2.2', Number(new URL(control.url).port)]]);
    for (const t of targets) {
      // the suite server's port is reached as well: only the firewall keeps guests off it
      expect(got[key(t.target)], t.what).toMatch(t.answer);
    }
    expect(got[`10.0.2.2 ${new URL(control.url).port}`]).toMatch(API_ANSWER);
  });

  for (const internet of [true, false]) {
    it(`with allowInternetAccess: ${internet}, every probe fails`, async () => {
      const s = await sandbox({ allowInternetAccess: internet });
      // every address the other sandbox could be reached at: the guest address every sandbox has
      // (10.0.2.15, here the prober's own) and this host's addresses (through which a forward would go)
      const peerTargets = [...new Set(['10.0.2.15', ...hostAddresses().map((a) => a.guest)])].map((h): Target => [h, peerPort]);
      const got = await probe(s, [...targets.map((t) => t.target), ...peerTargets]);
      expect(Object.keys(got).sort()).toEqual([...targets.map((t) => key(t.target)), ...peerTargets.map(key)].sort());
      // (all at once, so that a failure names every target that was reached)
      expect(Object.entries(got).filter(([, v]) => !v.startsWith('closed '))).toEqual([]);
      // the peer's listener answers that probe from where it is allowed: the peer itself
      expect((await probe(peer, [['10.0.2.15', peerPort]]))[`10.0.2.15 ${peerPort}`]).toBe(`open ${token}`);
    });
  }

  it('reaches the internet with allowInternetAccess: true, and nothing with false', async () => {
    const curl = `curl -s -m 10 -o /dev/null -w '%{http_code}' ${ARCHIVE}/ || true`;
    const [on, off] = await Promise.all([sandbox(), sandbox({ allowInternetAccess: false })]);
    expect((await off.getInfo()).allowInternetAccess).toBe(false);
    // (the control: the same probe from a sandbox with internet reaches it)
    await expectGuestReachesArchive(on);
    expect((await off.commands.run(curl)).stdout).toBe('000');
  });
});

describe('firewall upkeep', () => {
  it('puts the firewall rules back when they are flushed while sandboxes run (an nftables reload)', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    // a uid range (and so a table) of its own: the suite's other servers keep their rules meanwhile
    const table = 'nullspace_3100000_1000';
    onTestFinished(() => {
      execFileSync('nft', ['delete', 'table', 'inet', table], { stdio: 'ignore' });
    });
    const server = await ownServer(dataDir, {
      NULLSPACE_VM_UID_BASE: '3100000',
      NULLSPACE_VM_UID_COUNT: '1000',
      NULLSPACE_FIREWALL_CHECK_MS: '300',
      NULLSPACE_WARM_POOL: '0',
      NULLSPACE_SNAPSHOT_POOL: '0',
    });
    const s = await Sandbox.create({ apiUrl: server.url, apiKey: server.key });
    onTestFinished(async () => {
      await s.kill().catch(() => {});
    });
    const token = `ns-probe-${randomBytes(8).toString('hex')}`;
    const target: Target = ['10.0.2.2', await listener('127.0.0.1', token)];
    expect((await probe(s, [target]))[key(target)]).toMatch(/^closed /);
    execFileSync('nft', ['delete', 'table', 'inet', table]);
    await waitFor('rules back', async () => {
      try {
        return execFileSync('nft', ['list', 'table', 'inet', table], { encoding: 'utf8' }).includes('reject') ? true : undefined;
      } catch {
        return undefined;
      }
    }, 10_000);
    expect((await probe(s, [target]))[key(target)]).toMatch(/^closed /);
  });
});
