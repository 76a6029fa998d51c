import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { leftoverQemu, TEST_ROOT } from './env.js';

const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

/**
 * Runs the `nullspace` CLI against `server` (its URL and key); its exit code and output. Never
 * blocks this process: the server may be an in-process one (`ownServer`).
 */
export function cli(server: { url: string; key: string }, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runScript('packages/cli/dist/main.js', args, { env: { NULLSPACE_API_URL: server.url, NULLSPACE_API_KEY: server.key, ...opts.env }, input: opts.input, timeoutMs: 120_000 });
}

/**
 * Runs a Node script of the repository to its end (sent `signal` after `timeoutMs`); its exit code
 * and output. Never blocks this process: a worker blocked for minutes misses vitest's own calls
 * ("Timeout calling onTaskUpdate" fails the run), and a server may be an in-process one.
 */
export async function runScript(
  script: string,
  args: string[],
  opts: { env?: Record<string, string>; input?: string; timeoutMs: number; signal?: NodeJS.Signals },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [path.resolve(__dirname, '..', script), ...args], { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.end(opts.input ?? '');
  const timer = setTimeout(() => child.kill(opts.signal ?? 'SIGKILL'), opts.timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export function tempDataDir(): string {
  fs.mkdirSync(TEST_ROOT, { recursive: true });
  return path.join(TEST_ROOT, `x-${randomBytes(3).toString('hex')}`);
}

/**
 * Kills every QEMU of a data dir and removes it: the cleanup of tests that run their own servers
 * (registered before anything is started, so it runs even when the test fails).
 */
export function cleanupDataDir(dataDir: string): void {
  onTestFinished(() => {
    for (const pid of leftoverQemu(dataDir)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
}

/**
 * Frees the sandbox uid claims of a data dir's servers: what a server killed with SIGKILL cannot do
 * itself (a restart on its data dir would). In-process servers release theirs when closed, and the
 * suite's leak check catches those that do not.
 */
function releaseUidClaims(dataDir: string): void {
  for (const file of uidClaims(dataDir)) fs.rmSync(file, { force: true });
}

/** The sandbox uid claims (files in /run/nullspace/vm-uids) of a data dir's servers. */
export function uidClaims(dataDir: string): string[] {
  const claims = path.join(process.env.NULLSPACE_RUN_DIR ?? '/run/nullspace', 'vm-uids');
  return (fs.existsSync(claims) ? fs.readdirSync(claims) : [])
    .map((f) => path.join(claims, f))
    .filter((file) => {
      try {
        return fs.readFileSync(file, 'utf8').startsWith(`${dataDir} `);
      } catch {
        return false; // released meanwhile (the claims are host-wide: other servers come and go)
      }
    });
}

/** An in-process server on its own data dir, with extra environment (limits, CPU model, ...). */
export async function ownServer(dataDir: string, env: Record<string, string> = {}): Promise<RunningServer & { key: string }> {
  const key = `own-${randomBytes(12).toString('hex')}`;
  const config = loadConfig({ ...process.env, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: key, ...env }, { dataDir, port: 0 });
  const server = await startServer(config);
  onTestFinished(() => server.close());
  return Object.assign(server, { key });
}

/** A server's warm pools, as `GET /v1/health` reports them. */
export interface Pools {
  warmPool: { size: number; ready: number; preparing: number };
  snapshotPool: { size: number; ready: number; preparing: number; snapshots: string[] };
}
export async function pools(server: { url: string; key: string }): Promise<Pools> {
  return (await (await fetch(`${server.url}/v1/health`, { headers: { authorization: `Bearer ${server.key}` } })).json()) as Pools;
}

/** A `nullspace serve` child process (see `serverProcess`). */
export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves when the process has exited (at once if it already has): the test expects it to exit. */
  exited(): Promise<void>;
  /** kill -9, resolved once it has exited. */
  kill(): Promise<void>;
}

/** Resolves when `child` has exited: at once if it already has (an `exit` listener added late never fires). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

/** `nullspace serve` as a separate process (so that it can be killed with SIGKILL), with extra flags `args`. */
export async function serverProcess(dataDir: string, key: string, port: number, env: Record<string, string> = {}, args: string[] = []): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', String(port), '--data-dir', dataDir, ...args], {
    env: { ...process.env, NULLSPACE_API_KEY: key, NULLSPACE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
    releaseUidClaims(dataDir);
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const srv: ServerProcess = {
    child,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    exited: () => {
      serverProcesses.delete(srv);
      return exited(child);
    },
    kill: () => {
      serverProcesses.delete(srv);
      child.kill('SIGKILL');
      return exited(child);
    },
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const onData = () => {
        if (out.includes('serving http')) resolve();
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code, signal) => reject(new Error(`server exited with ${code ?? signal}: ${out}`)));
      timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 60_000);
    });
  } finally {
    clearTimeout(timer);
  }
  serverProcesses.add(srv);
  onTestFinished(() => {
    serverProcesses.delete(srv);
  });
  return srv;
}

/**
 * The server processes of the running test that are expected to keep running: a `waitFor` fails at
 * once when one of them exits (`kill` and `exited` take a server off this list).
 */
const serverProcesses = new Set<ServerProcess>();

/** The pid of a sandbox's QEMU process. */
export function qemuPid(sandboxId: string): number | undefined {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`nullspace-${sandboxId}\0`)) return Number(p);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/**
 * Polls `fn` until it returns something other than undefined. Fails at once, with the server's
 * output, when a server process of the test (`serverProcess`) exits unexpectedly meanwhile, instead
 * of at the deadline.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const dead = () => [...serverProcesses].find((s) => s.child.exitCode !== null || s.child.signalCode !== null);
  for (;;) {
    const gone = dead();
    if (gone) throw new Error(`waiting for ${what}: the server process exited (${gone.child.exitCode ?? gone.child.signalCode}): ${gone.output()}`);
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function freePort(): number {
  return 20000 + Math.floor(Math.random() * 20000);
}

/** A request to a server of a test's own (API key by default, `auth` the whole Authorization header): status, JSON body if any, raw bytes, headers. */
export async function req(srv: { url: string; key: string }, method: string, p: string, opts: { body?: unknown; auth?: string } = {}) {
  const res = await fetch(`${srv.url}${p}`, {
    method,
    headers: { authorization: opts.auth ?? `Bearer ${srv.key}`, ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  const buf = Buffer.from(await res.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(buf.toString());
  } catch {
    json = undefined;
  }
  return { status: res.status, json: json as Record<string, any>, buf, headers: res.headers };
}

/** `[status, error code]` of a `req` answer. */
export const statusAndCode = (r: { status: number; json: Record<string, any> }) => [r.status, r.json?.error?.code as string | undefined];
