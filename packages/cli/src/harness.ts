/**
 * What the benchmark and the soak share: a scratch data dir of their own under the test root, the
 * host-wide traces of a data dir (its QEMU processes and sandbox uid claims) and their removal, a
 * server as a separate process, and the few operator calls they make on it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuPidsMatching } from '@nullspace/runtime';

/** Where test runs, the benchmark and the soak put their data dirs (short: unix socket paths live under them). */
export function scratchDataDir(prefix: string): string {
  const root = process.env.NULLSPACE_TEST_ROOT ?? path.join(process.env.NULLSPACE_HOME ?? '/var/lib/nullspace', 'tmp');
  fs.mkdirSync(root, { recursive: true });
  return path.join(root, `${prefix}-${randomBytes(3).toString('hex')}`);
}

/** The pid of a sandbox's QEMU process. */
export function qemuPid(sandboxId: string): number | undefined {
  return qemuPidsMatching(`nullspace-${sandboxId}\0`)[0];
}

/** The QEMU processes of a data dir. */
export function qemuOf(dataDir: string): number[] {
  return qemuPidsMatching(`${dataDir}/`);
}

/** Kills every QEMU process of a data dir. */
export function killQemuOf(dataDir: string): void {
  for (const pid of qemuOf(dataDir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

const claimsDir = () => path.join(process.env.NULLSPACE_RUN_DIR ?? '/run/nullspace', 'vm-uids');

/** The sandbox uid claims (host-wide, see isolation.ts) of a data dir (or of one of its sandboxes): their files. */
export function uidClaimsOf(dataDir: string, sandboxId = ''): string[] {
  const dir = claimsDir();
  const out: string[] = [];
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    try {
      const owner = fs.readFileSync(path.join(dir, f), 'utf8');
      if (sandboxId ? owner === `${dataDir} ${sandboxId}` : owner.startsWith(`${dataDir} `)) out.push(path.join(dir, f));
    } catch {
      /* released meanwhile */
    }
  }
  return out;
}

/** Removes a data dir and every trace of it on the host: its QEMU processes and uid claims. */
export function removeDataDir(dataDir: string): void {
  killQemuOf(dataDir);
  for (const f of uidClaimsOf(dataDir)) fs.rmSync(f, { force: true });
  fs.rmSync(dataDir, { recursive: true, force: true });
}

/** Runs `fn` (synchronous: the process ends right after) on SIGINT, SIGTERM and SIGHUP, then exits 130. */
export function onInterrupt(what: string, log: (m: string) => void, fn: () => void): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      log(`${sig}: ${what}`);
      fn();
      process.exit(130);
    });
  }
  // a reader that went away (`npm run bench | head`) must not end the run before its clean-up
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

export interface Conn {
  apiUrl: string;
  apiKey: string;
}

/** An operator call (routes the SDK does not wrap): its JSON answer, or an error naming the status. */
export async function operatorCall<T>(c: Conn, method: string, route: string): Promise<T> {
  const res = await fetch(`${c.apiUrl}${route}`, { method, headers: { authorization: `Bearer ${c.apiKey}` } });
  if (res.status !== 200) throw new Error(`${method} ${route}: HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as T;
}

/** A server's warm pools, as `GET /v1/health` reports them. */
export interface Pools {
  warmPool: { size: number; ready: number; preparing: number };
  snapshotPool: { size: number; ready: number; preparing: number; snapshots: string[] };
}

/**
 * Waits until the warm pools are full and nothing is being prepared: the server is at rest (the
 * pools fill after its start and after each take or snapshot, ~1 s per slot here).
 */
export async function poolsReady(c: Conn, timeoutMs = 60_000): Promise<Pools> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const p = await operatorCall<Pools>(c, 'GET', '/v1/health');
    const { warmPool: w, snapshotPool: s } = p;
    if (w.ready >= w.size && w.preparing === 0 && s.preparing === 0 && s.ready >= s.snapshots.length) return p;
    if (Date.now() > deadline) throw new Error(`the warm pools did not fill within ${timeoutMs / 1000} s: ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** The last 64 KiB of its output (JSON log lines at the level asked for). */
  output(): string;
  /** Calls `fn` with each line it writes from now on. */
  onLine(fn: (line: string) => void): void;
}

/**
 * `nullspace serve` as a separate process on its own port (chosen by the system), so that it can be
 * measured from outside through /proc and killed with SIGKILL. The caller stops it.
 */
export async function spawnServer(dataDir: string, apiKey: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, NULLSPACE_API_KEY: apiKey, NULLSPACE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const listeners: Array<(line: string) => void> = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    let partial = '';
    stream.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.length > 65536) out = out.slice(-65536);
      const lines = (partial + b.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) for (const fn of listeners) fn(line);
    });
  }
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start within 60 s: ${out}`)), 60_000);
    const onData = () => {
      const m = /serving (http:\/\/\S+)\/v1 /.exec(out);
      if (!m?.[1]) return;
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      resolve(m[1]);
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? sig}): ${out}`));
    });
  });
  return { child, url, output: () => out, onLine: (fn) => listeners.push(fn) };
}
