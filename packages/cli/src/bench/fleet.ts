/**
 * Fleet rows of the benchmark (needs root): a local fleet (`scripts/cluster.sh up 3`: PostgreSQL, a
 * control plane that runs no sandbox, three hosts in network namespaces) of the run's own, removed
 * at the end, also on failure. Measures what the control plane adds: the hop per command and per
 * file read (against the same call made straight to the host, with the SDK pointed at the host's
 * listener), placement (a create through the control plane against one made on a host), and a
 * restore on a host that first fetches the snapshot from another (against a restore on the host
 * holding it: same snapshot, same run), with the bytes it moved against the bytes the guest changed;
 * and E2B's SDK through the control plane (against nullspace's SDK running the same login shell).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox } from 'nullspace';
import { median, time, type Row } from './stats.js';

/** How long `fn` took (ms). */
const ms = async (fn: () => Promise<unknown>): Promise<number> => (await time(fn))[0];

export interface FleetBenchCtx {
  quick: boolean;
  n: number;
  log: (m: string) => void;
}

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const MiB = 1048576;

function cluster(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [path.join(REPO, 'scripts/cluster.sh'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Why the fleet rows cannot run here (undefined: they can). */
export function fleetUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'fleet rows need root (network namespaces)';
  if (!fs.existsSync('/usr/lib/postgresql/15/bin/initdb') && !process.env.NULLSPACE_PG_BIN) return 'fleet rows need PostgreSQL (scripts/setup.sh installs it)';
  return undefined;
}

export async function fleetRows(ctx: FleetBenchCtx): Promise<{ rows: Row[]; notes: string[] }> {
  const why = fleetUnavailable();
  if (why) return { rows: [], notes: [why] };
  const { log } = ctx;
  const n = ctx.quick ? 3 : ctx.n;
  const dir = path.join(process.env.NULLSPACE_HOME ?? '/var/lib/nullspace', 'tmp', `bf-${randomBytes(3).toString('hex')}`);
  const env = {
    ...process.env,
    NULLSPACE_CLUSTER_DIR: dir,
    NULLSPACE_CLUSTER_NAME: `bf${randomBytes(2).toString('hex')}`,
    NULLSPACE_CLUSTER_NET: String(randomInt(100, 250)),
    NULLSPACE_CLUSTER_PORT: '7070',
    NULLSPACE_LOG_LEVEL: 'info',
  };
  log('fleet: starting 3 hosts');
  const up = await cluster(env, 'up', '3');
  try {
    if (up.code !== 0) throw new Error(`cluster.sh up failed: ${up.stderr}`);
    const apiUrl = /^export NULLSPACE_API_URL=(\S+)$/m.exec(up.stdout)![1]!;
    const apiKey = /^export NULLSPACE_API_KEY=(\S+)$/m.exec(up.stdout)![1]!;
    const cp = { apiUrl, apiKey };
    const state = fs.readFileSync(path.join(dir, 'cluster.state'), 'utf8');
    const dbUrl = /^DB_URL=(\S+)$/m.exec(state)![1]!;
    // each host's listener and the control plane's credential for it (what the control plane presents)
    const rows = execFileSync('psql', [dbUrl, '-tAF', ' ', '-c', 'SELECT id, url, control_credential FROM hosts ORDER BY url'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([id, url, cred]) => ({ id: id!, conn: { apiUrl: url!, apiKey: cred! } }));
    const call = async (method: string, p: string, body?: unknown) => {
      const res = await fetch(apiUrl + p, { method, headers: { authorization: `Bearer ${apiKey}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
      if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
      return res.status === 204 ? undefined : res.json();
    };
    const hostOf = async (id: string) => ((await call('GET', `/v1/sandboxes/${id}`)) as { hostId: string }).hostId;
    const onlyOn = async <T>(keep: string, fn: () => Promise<T>): Promise<T> => {
      const others = rows.map((r) => r.id).filter((h) => h !== keep);
      for (const h of others) await call('POST', `/v1/hosts/${h}/drain`);
      try {
        return await fn();
      } finally {
        for (const h of others) await call('POST', `/v1/hosts/${h}/undrain`);
      }
    };
    const out: Row[] = [];
    const notes: string[] = [];

    // placement: a create through the control plane (it picks one of 3 hosts) against a create on a host
    const viaCp: number[] = [];
    const direct: number[] = [];
    const made: Sandbox[] = [];
    for (let i = 0; i < n; i++) {
      viaCp.push(await ms(async () => void made.push(await Sandbox.create({ ...cp, timeoutMs: 600_000 }))));
      const host = rows[i % rows.length]!;
      direct.push(await ms(async () => void made.push(await Sandbox.create({ ...host.conn, timeoutMs: 600_000 }))));
    }
    for (const s of made.splice(0)) await s.kill().catch(() => {});
    out.push({ name: 'fleet: create placed by the control plane (3 hosts)', unit: 'ms', samples: viaCp, ref: { value: median(direct), label: 'create on a host directly' } });

    // the control plane's hop: a command and a 1 MiB file read through it, and straight to the host
    const s = await Sandbox.create({ ...cp, timeoutMs: 600_000 });
    const hostId = await hostOf(s.sandboxId);
    const onHost = await Sandbox.connect(s.sandboxId, rows.find((r) => r.id === hostId)!.conn);
    await s.files.write('/tmp/one-mib', new Uint8Array(MiB).fill(7));
    const cmdCp: number[] = [];
    const cmdHost: number[] = [];
    const readCp: number[] = [];
    const readHost: number[] = [];
    for (let i = 0; i < n * 3; i++) {
      cmdCp.push(await ms(() => s.commands.run('true')));
      cmdHost.push(await ms(() => onHost.commands.run('true')));
      readCp.push(await ms(() => s.files.read('/tmp/one-mib', { format: 'bytes' })));
      readHost.push(await ms(() => onHost.files.read('/tmp/one-mib', { format: 'bytes' })));
    }
    out.push({ name: 'fleet: command round trip through the control plane', unit: 'ms', samples: cmdCp, ref: { value: median(cmdHost), label: 'straight to the host' } });
    out.push({ name: 'fleet: 1 MiB file read through the control plane', unit: 'ms', samples: readCp, ref: { value: median(readHost), label: 'straight to the host' } });

    // E2B's SDK on the fleet (e2b/fleet.ts): its command through the control plane against the
    // nullspace SDK's running the same login shell on the same sandbox through the control plane
    // (E2B's SDK runs every command as `/bin/bash -l -c`; it cannot be pointed at a host's envd
    // directly: its RPC transport sends no extra headers)
    try {
      const { Sandbox: E2bSandbox } = await import('e2b');
      const e = await E2bSandbox.create({ apiUrl, sandboxUrl: apiUrl, apiKey, timeoutMs: 600_000 });
      try {
        const native = await Sandbox.connect(e.sandboxId, cp);
        await e.commands.run('true');
        await native.commands.run('/bin/bash -l -c true');
        const viaE2b: number[] = [];
        const viaNative: number[] = [];
        for (let i = 0; i < n * 3; i++) {
          viaE2b.push(await ms(() => e.commands.run('true')));
          viaNative.push(await ms(() => native.commands.run('/bin/bash -l -c true')));
        }
        out.push({ name: "fleet: E2B SDK's command through the control plane", unit: 'ms', samples: viaE2b, ref: { value: median(viaNative), label: 'nullspace SDK, same login shell, same hop' } });
      } finally {
        await e.kill().catch(() => {});
      }
    } catch (err) {
      notes.push(`fleet: E2B row skipped (${(err as Error).message.split('\n')[0]})`);
    }

    // cross-host restore: each round the guest changes 16 MiB of disk and 32 MiB of memory, is
    // snapshotted on its host A, restored on B (which fetches what it lacks of the snapshot from A),
    // then on A (which holds it)
    const other = rows.find((r) => r.id !== hostId)!.id;
    await s.commands.run("python3 -c 'import os,time; b=bytearray(os.urandom(32<<20)); open(\"/tmp/ready\",\"w\").close(); time.sleep(86400)'", { background: true, timeoutMs: 0 });
    await s.commands.run('while [ ! -e /tmp/ready ]; do sleep 0.2; done', { timeoutMs: 120_000 });
    const cross: number[] = [];
    const local: number[] = [];
    const moved: number[] = [];
    const changed: number[] = [];
    const cpLog = path.join(dir, 'cp.log');
    const snaps: string[] = [];
    for (let i = 0; i < n; i++) {
      await s.commands.run(`head -c 16M /dev/urandom > /workspace/round-${i}; python3 -c 'import os; open("/dev/shm/r${i}","wb").write(os.urandom(32<<20))'`, { timeoutMs: 120_000 });
      changed.push(48);
      const snap = await s.createSnapshot();
      const logBefore = fs.statSync(cpLog).size;
      cross.push(await ms(async () => void made.push(await onlyOn(other, () => Sandbox.create({ ...cp, snapshotId: snap.id, timeoutMs: 600_000 })))));
      // the control plane logs each copy with the bytes the target fetched
      const copied = fs.readFileSync(cpLog, 'utf8').slice(logBefore).split('\n').filter((l) => l.includes('"snapshot copied"'));
      const fetched = copied.map((l) => Number((JSON.parse(l) as { bytesFetched?: number }).bytesFetched ?? NaN));
      moved.push(fetched.reduce((a, b) => a + b, 0) / MiB);
      local.push(await ms(async () => void made.push(await onlyOn(hostId, () => Sandbox.create({ ...cp, snapshotId: snap.id, timeoutMs: 600_000 })))));
      for (const x of made.splice(0)) await x.kill().catch(() => {});
      // (kept until the end: what a host holds of earlier rounds is what the next round need not move)
      snaps.push(snap.id);
    }
    for (const id of snaps) await call('DELETE', `/v1/snapshots/${id}`);
    out.push({ name: 'fleet: restore on a host fetching the snapshot from another', unit: 'ms', samples: cross, ref: { value: median(local), label: 'restore on the host holding it' } });
    out.push({ name: 'fleet: MiB moved for that restore (48 MiB changed per round)', unit: 'MiB', samples: moved, ref: { value: median(changed), label: 'MiB the guest changed' } });
    notes.push('fleet: the first round moves the whole chain (the target holds nothing of it); later rounds move what changed since');
    await s.kill();
    return { rows: out, notes };
  } finally {
    const down = await cluster(env, 'down');
    if (down.code !== 0) log(`fleet: cluster.sh down failed: ${down.stderr}`);
  }
}
