#!/usr/bin/env node
/**
 * nullspace soak: `npm run soak -- --cycles N [--warmup W] [--fuzz-minutes M] [--seed S]`. Starts its own server
 * (`nullspace serve`, a separate process, on a data dir of its own under the test root), runs a few
 * warm-up cycles and then N cycles of create / snapshot / create from the snapshot / fork / hibernate
 * / resume / kill, with a file written, read back and checked and a command's output checked in every
 * sandbox of every cycle (and a shared volume in every other cycle), optionally runs the API fuzzer,
 * and then reports what is left: QEMU processes and uid claims of its data dir, the server's unix
 * sockets, open fds and RSS against the baseline taken after the warm-up, data-dir bytes after a gc,
 * and the database rows of ended things. Exits non-zero when a target is missed or a cycle failed.
 * Removes everything it started on exit, on SIGINT/SIGTERM and on failure. Not run in CI (the test
 * suite runs it with --cycles 1 --warmup 1).
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { storeCounts } from '@nullspace/server';
import { Sandbox, Volume, type Snapshot } from 'nullspace';
import { onInterrupt, operatorCall, poolsReady, qemuOf, qemuPid, removeDataDir, scratchDataDir, spawnServer, uidClaimsOf, type Conn, type Pools, type ServerProcess } from '../harness.js';
import { fmt, median, quantile, textTable } from '../bench/stats.js';

const log = (m: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1048576;
/** RSS growth from the baseline (after the warm-up cycles) to the end that still passes. */
const RSS_GROWTH_LIMIT = 0.1;
/** Stop cycling after this many failed cycles (a broken server fails every later one the same way). */
const MAX_FAILED_CYCLES = 3;
/**
 * Test-only: `leak-sandbox` makes the last cycle start one sandbox more and forget it, so that the
 * test suite sees the soak fail a target (and still remove everything).
 */
const INJECT = process.env.NULLSPACE_SOAK_INJECT ?? '';

function options(): { cycles: number; warmup: number; fuzzMinutes: number; seed: number } {
  const { values } = parseArgs({
    options: {
      cycles: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '3' },
      'fuzz-minutes': { type: 'string', default: '0' },
      seed: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: npm run soak -- [--cycles N (20)] [--warmup W (3)] [--fuzz-minutes M (0)] [--seed S]\n');
    process.exit(0);
  }
  const num = (name: string, v: string | undefined, integer: boolean) => {
    const n = Number(v);
    if (v === undefined || v === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a non-negative ${integer ? 'integer' : 'number'}, not ${JSON.stringify(v)}`);
    return n;
  };
  return {
    cycles: num('cycles', values.cycles, true),
    warmup: Math.max(1, num('warmup', values.warmup, true)),
    fuzzMinutes: num('fuzz-minutes', values['fuzz-minutes'], false),
    seed: values.seed === undefined ? randomInt(2 ** 31) : num('seed', values.seed, true),
  };
}

// --- the API fuzzer (packages/cli/src/fuzz/index.ts), loaded only when asked for

type RunApiFuzz = (o: { apiUrl: string; apiKey: string; dataDir: string; durationMs: number; seed: number; log: (m: string) => void }) => Promise<unknown>;

async function loadFuzzer(): Promise<RunApiFuzz> {
  // a specifier the compiler does not resolve: the fuzzer is an optional module of this package
  const spec = new URL('../fuzz/index.js', import.meta.url);
  let mod: { runApiFuzz?: unknown };
  try {
    mod = (await import(spec.href)) as { runApiFuzz?: unknown };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && !fs.existsSync(spec)) {
      throw new Error(`--fuzz-minutes needs the API fuzzer, ${spec.pathname}, which is not there: build the CLI with packages/cli/src/fuzz/index.ts (exporting runApiFuzz) or run without --fuzz-minutes`);
    }
    throw err;
  }
  if (typeof mod.runApiFuzz !== 'function') throw new Error(`${spec.pathname} does not export a function runApiFuzz({ apiUrl, apiKey, dataDir, durationMs, seed, log })`);
  return mod.runApiFuzz as RunApiFuzz;
}

/** The fuzzer's findings: it resolves with an array of them, or with an object holding one as `findings`. */
function findingsOf(result: unknown): unknown[] {
  if (Array.isArray(result)) return result;
  const f = (result as { findings?: unknown } | undefined)?.findings;
  if (Array.isArray(f)) return f;
  throw new Error(`runApiFuzz resolved with ${JSON.stringify(result)?.slice(0, 200)}: expected an array of findings or {findings: [...]}`);
}

// --- the server process, seen from outside

interface ProcStats {
  rssMiB: number;
  /** Open fds, not counting the API's client connections (the soak's own keep-alive sockets). */
  fds: number;
  unixSockets: number;
  /** Open fds by what they are (sandbox ids left out): to tell what a growth is. */
  kinds: Map<string, number>;
}

/** A socket table of /proc/net: inode -> [local address or path, state]. */
function sockets(table: string): Map<string, [string, string]> {
  const out = new Map<string, [string, string]>();
  const unix = table.endsWith('unix');
  try {
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 7) continue;
      if (unix) out.set(f[6]!, [f[7] ?? '', f[5]!]);
      else out.set(f[9]!, [f[1]!, f[3]!]);
    }
  } catch {
    /* no such table (no IPv6) */
  }
  return out;
}

function procStats(pid: number, apiPort: number): ProcStats {
  const rss = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  const unix = sockets('/proc/net/unix');
  const tcp = new Map([...sockets('/proc/net/tcp'), ...sockets('/proc/net/tcp6')]);
  const port = `:${apiPort.toString(16).toUpperCase().padStart(4, '0')}`;
  const anonymous = (t: string) => t.replace(/sbx_[0-9a-z]{16}/g, 'sbx_*').replace(/\[\d+\]$/, '');
  let fds = 0;
  let unixSockets = 0;
  const kinds = new Map<string, number>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    let kind = anonymous(target);
    if (inode && unix.has(inode)) {
      unixSockets++;
      kind = `unix socket ${anonymous(unix.get(inode)![0])}`;
    } else if (inode && tcp.has(inode)) {
      const [local, state] = tcp.get(inode)!;
      // established connections to the API port are clients (the soak's own keep-alive ones)
      if (local.endsWith(port) && state === '01') continue;
      kind = `tcp socket state ${state}${local.endsWith(port) ? ' (API port)' : ''}`;
    }
    fds++;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return { rssMiB: Number(rss?.[1] ?? NaN) / 1024, fds, unixSockets, kinds };
}

/**
 * Samples over 12 s of rest: the fds of the one with the fewest (a momentary child, the firewall
 * check's nft, is not a leak) and the lowest RSS (V8 collects garbage of its own accord only some
 * seconds after the allocations stop: the RSS in between depends on when the last collection ran).
 */
async function settledStats(pid: number, apiPort: number): Promise<ProcStats> {
  const samples: ProcStats[] = [];
  for (let i = 0; i < 24; i++) {
    samples.push(procStats(pid, apiPort));
    await sleep(500);
  }
  const least = samples.reduce((a, b) => (b.fds < a.fds ? b : a));
  return { ...least, rssMiB: Math.min(...samples.map((x) => x.rssMiB)) };
}

/** What kinds of fds there are more (or fewer) of at the end than at the baseline. */
function fdChanges(base: ProcStats, end: ProcStats): string[] {
  const out: string[] = [];
  for (const kind of new Set([...base.kinds.keys(), ...end.kinds.keys()])) {
    const d = (end.kinds.get(kind) ?? 0) - (base.kinds.get(kind) ?? 0);
    if (d) out.push(`server fds ${d > 0 ? '+' : ''}${d}: ${kind}`);
  }
  return out;
}

/** The server's children that exited and were never waited for. */
function zombieChildren(pid: number): number {
  let n = 0;
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z' && Number(f[1]) === pid) n++;
    } catch {
      /* gone */
    }
  }
  return n;
}

/** Files (not directories) under the data dir besides its database and API key: their paths and allocated bytes. */
function dataDirFiles(dataDir: string): { paths: string[]; bytes: number } {
  const keep = new Set(['nullspace.db', 'nullspace.db-wal', 'nullspace.db-shm', 'api-key']);
  const paths: string[] = [];
  let bytes = 0;
  const walk = (dir: string) => {
    for (const e of fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : []) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (!(dir === dataDir && keep.has(e.name))) {
        paths.push(p);
        bytes += fs.lstatSync(p).blocks * 512;
      }
    }
  };
  walk(dataDir);
  return { paths, bytes };
}

const DB_TABLES = ['sandboxes', 'sandbox_events', 'snapshots', 'layers', 'volumes'] as const;

// --- one cycle

class StepError extends Error {
  constructor(
    readonly step: string,
    err: unknown,
  ) {
    const e = err as { code?: string; message?: string };
    super(`${step}: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}`);
  }
}

/** What a sandbox must hold: guest path -> content. */
type Files = Map<string, Buffer>;

interface Soak {
  c: Conn;
  dataDir: string;
  /** Milliseconds per step, over all cycles. */
  timings: Map<string, number[]>;
}

async function step<T>(soak: Soak, name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    const v = await fn();
    const list = soak.timings.get(name) ?? [];
    list.push(performance.now() - t0);
    soak.timings.set(name, list);
    return v;
  } catch (err) {
    throw new StepError(name, err);
  }
}

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !ok(); await sleep(100)) {
    if (Date.now() > deadline) throw new Error(`${what} (after ${timeoutMs / 1000} s)`);
  }
}

/**
 * Files and a command in one sandbox: every file it must hold is read back and compared, a new one
 * is written (and, with a volume, one there too), read back and compared, and a command's output
 * (the new file's digest, some arithmetic, the hostname) is checked. The new files are added to
 * `own` (this sandbox's disk) and `shared` (the volume, which every sandbox mounting it sees).
 */
async function exercise(sbx: Sandbox, label: string, own: Files, shared: { dir: string; files: Files } | undefined): Promise<void> {
  const check = async (files: Files) => {
    for (const [p, want] of files) {
      const got = Buffer.from((await sbx.files.read(p, { format: 'bytes' })) as Uint8Array);
      if (!got.equals(want)) throw new Error(`${p} in ${sbx.sandboxId} holds ${got.length} bytes (sha256 ${sha(got).slice(0, 12)}), expected ${want.length} (${sha(want).slice(0, 12)})`);
    }
  };
  await check(own);
  if (shared) await check(shared.files);
  const targets: Array<[string, Files]> = [[`/workspace/${label}.bin`, own], ...(shared ? [[`${shared.dir}/${label}.bin`, shared.files] as [string, Files]] : [])];
  for (const [p, files] of targets) {
    const data = randomBytes(randomInt(1024, 256 * 1024));
    await sbx.files.write(p, data);
    files.set(p, data);
    await check(new Map([[p, data]]));
    const n = randomInt(1000);
    const r = await sbx.commands.run(`sha256sum ${p} | cut -d' ' -f1; echo $((${n} * 7)); hostname`, { timeoutMs: 60_000 });
    const want = `${sha(data)}\n${n * 7}\n${sbx.sandboxId}\n`;
    if (r.exitCode !== 0 || r.stdout !== want) throw new Error(`a command in ${sbx.sandboxId} exited ${r.exitCode} with ${JSON.stringify(r.stdout)} (stderr ${JSON.stringify(r.stderr.slice(0, 200))}), expected ${JSON.stringify(want)}`);
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One cycle; everything it made is removed at its end (or, when a step failed, as far as it goes). */
async function cycle(soak: Soak, i: number, opts: { volume: boolean; leak: boolean }): Promise<void> {
  const { c, dataDir } = soak;
  const sandboxes: Sandbox[] = [];
  let snap: Snapshot | undefined;
  let volName: string | undefined;
  try {
    const shared = opts.volume ? { dir: '/mnt/soak', files: new Map() as Files } : undefined;
    if (shared) {
      volName = `soak-${i}-${randomBytes(3).toString('hex')}`;
      await step(soak, 'volume create', () => Volume.create(volName!, c));
    }
    const meta = { metadata: { soak: String(i) } };
    const a = await step(soak, 'create', () => Sandbox.create({ ...c, ...meta, template: 'base', ...(volName ? { volumes: { [shared!.dir]: volName } } : {}) }));
    sandboxes.push(a);
    const filesA: Files = new Map();
    await step(soak, 'files + command: created', () => exercise(a, 'a1', filesA, shared));
    snap = await step(soak, 'snapshot', () => a.createSnapshot(meta));
    const filesSnap = new Map(filesA);
    await step(soak, 'files + command: source after snapshot', () => exercise(a, 'a2', filesA, shared));
    const b = await step(soak, 'create from snapshot', () => Sandbox.create({ ...c, ...meta, snapshotId: snap!.id }));
    sandboxes.push(b);
    await step(soak, 'files + command: from snapshot', () => exercise(b, 'b', filesSnap, shared));
    const filesFork = new Map(filesA);
    const child = await step(soak, 'fork', () => a.fork(meta));
    sandboxes.push(child);
    await step(soak, 'files + command: fork child', () => exercise(child, 'c', filesFork, shared));
    await step(soak, 'hibernate', async () => {
      await a.hibernate();
      await until(`the QEMU of ${a.sandboxId} still runs after its hibernation`, () => qemuPid(a.sandboxId) === undefined);
    });
    await step(soak, 'resume', () => Sandbox.connect(a.sandboxId, c));
    await step(soak, 'files + command: resumed', () => exercise(a, 'a3', filesA, shared));
    if (opts.leak) {
      // test-only (NULLSPACE_SOAK_INJECT=leak-sandbox): a sandbox nobody kills
      const leaked = await Sandbox.create({ ...c, ...meta, template: 'base' });
      log(`cycle ${i}: injected a leaked sandbox ${leaked.sandboxId}`);
    }
    await step(soak, 'kill', async () => {
      for (const s of sandboxes.splice(0)) {
        await s.kill();
        await until(`the QEMU of ${s.sandboxId} still runs after its kill`, () => qemuPid(s.sandboxId) === undefined);
        await until(`the uid claim of ${s.sandboxId} is still there after its kill`, () => uidClaimsOf(dataDir, s.sandboxId).length === 0);
      }
    });
    await step(soak, 'snapshot delete', () => snap!.delete());
    snap = undefined;
    if (volName) await step(soak, 'volume delete', () => Volume.delete(volName!, c));
    volName = undefined;
  } catch (err) {
    // the cycle failed: remove what it made (errors here are added to the report: a leftover is counted anyway)
    const also: string[] = [];
    for (const s of sandboxes) await s.kill().catch((e: Error) => also.push(`kill ${s.sandboxId}: ${e.message}`));
    if (snap) await snap.delete().catch((e: Error) => also.push(`delete ${snap!.id}: ${e.message}`));
    if (volName) await Volume.delete(volName, c).catch((e: Error) => also.push(`delete volume ${volName}: ${e.message}`));
    if (also.length) (err as Error).message += ` (clean-up: ${also.join('; ')})`;
    throw err;
  }
}

// --- the run

interface Check {
  name: string;
  baseline?: string;
  end: string;
  target: string;
  pass: boolean | undefined;
}

async function main(): Promise<number> {
  const o = options();
  const runFuzz = o.fuzzMinutes > 0 ? await loadFuzzer() : undefined;
  const dataDir = scratchDataDir('soak');
  const apiKey = `soak-${randomBytes(12).toString('hex')}`;
  let server: ServerProcess | undefined;
  let errorLines = 0;
  const lastErrors: string[] = [];
  // the server first (it must not start anything more), then every trace of the data dir
  const teardown = () => {
    const pid = server?.child.pid;
    if (pid !== undefined && server?.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGKILL');
      waitGoneSync(pid);
    }
    removeDataDir(dataDir);
  };
  onInterrupt('stopping the server and removing its data dir', log, teardown);
  process.once('exit', teardown);
  try {
    log(`data dir ${dataDir}, ${o.cycles} cycles after ${o.warmup} of warm-up${o.fuzzMinutes ? `, ${o.fuzzMinutes} min of API fuzzing` : ''}, seed ${o.seed}`);
    // ended sandboxes' records are pruned right away (retention 1 ms, looked for every 50 ms) so that
    // what the database keeps at the end is what it would never let go of
    server = await spawnServer(dataDir, apiKey, { NULLSPACE_ENDED_RETENTION_MS: '1', NULLSPACE_REAPER_INTERVAL_MS: '50' });
    server.onLine((line) => {
      if (!/"level":(50|60)\b/.test(line)) return;
      errorLines++;
      lastErrors.push(line.slice(0, 500));
      if (lastErrors.length > 5) lastErrors.shift();
    });
    const pid = server.child.pid!;
    const apiPort = Number(new URL(server.url).port);
    const c: Conn = { apiUrl: server.url, apiKey };
    const tpl = await fetch(`${c.apiUrl}/v1/templates/base`, { headers: { authorization: `Bearer ${apiKey}` } });
    if (tpl.status === 404) throw new Error('template base is not built: run nullspace template build base');
    const soak: Soak = { c, dataDir, timings: new Map() };
    const rss: Array<[string, number]> = [];
    // at rest: the pools full, then 12 s of samples
    const atRest = async (): Promise<{ pools: Pools; stats: ProcStats }> => {
      const pools = await poolsReady(c);
      return { pools, stats: await settledStats(pid, apiPort) };
    };
    rss.push(['start', (await atRest()).stats.rssMiB]);

    const failures: string[] = [];
    const cycleMs: number[] = [];
    // cycles 1-W are the warm-up (first uses load code and grow the heap to its working size), then
    // W+1 .. W+N are measured
    const last = o.warmup + o.cycles;
    const runCycle = async (i: number) => {
      const t0 = performance.now();
      const name = i <= o.warmup ? `warm-up cycle ${i}/${o.warmup}` : `cycle ${i - o.warmup}/${o.cycles}`;
      try {
        await cycle(soak, i, { volume: i % 2 === 1, leak: INJECT === 'leak-sandbox' && i === last });
        if (i > o.warmup) cycleMs.push(performance.now() - t0);
        log(`${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      } catch (err) {
        failures.push(`${name}: ${(err as Error).message}`);
        log(`${name} FAILED: ${(err as Error).message}`);
      }
    };
    for (let i = 1; i <= o.warmup && failures.length < MAX_FAILED_CYCLES; i++) await runCycle(i);
    const base = await atRest();
    rss.push(['baseline', base.stats.rssMiB]);
    const every = Math.max(1, Math.ceil(o.cycles / 10));
    for (let i = 1; i <= o.cycles && failures.length < MAX_FAILED_CYCLES; i++) {
      await runCycle(o.warmup + i);
      // halfway, at rest too: a leak grows from there on, a heap still settling does not
      if (i === Math.ceil(o.cycles / 2) && o.cycles >= 4) rss.push([`cycle ${i} (at rest)`, (await atRest()).stats.rssMiB]);
      else if (i % every === 0 && i < o.cycles) rss.push([`cycle ${i}`, procStats(pid, apiPort).rssMiB]);
    }
    if (failures.length >= MAX_FAILED_CYCLES) log(`stopped after ${failures.length} failed cycles`);

    let findings: unknown[] | undefined;
    if (runFuzz) {
      log(`API fuzzing for ${o.fuzzMinutes} min (seed ${o.seed})`);
      try {
        findings = findingsOf(await runFuzz({ apiUrl: c.apiUrl, apiKey, dataDir, durationMs: o.fuzzMinutes * 60_000, seed: o.seed, log: (m) => log(`fuzz: ${m}`) }));
      } catch (err) {
        failures.push(`fuzz: ${(err as Error).stack ?? String(err)}`);
      }
    }

    // --- what is left
    log('measuring what is left');
    const end = await atRest();
    rss.push(['end', end.stats.rssMiB]);
    const slots = end.pools.warmPool.ready + end.pools.snapshotPool.ready;
    const qemuRunning = qemuOf(dataDir).length;
    const claimsRunning = uidClaimsOf(dataDir).length;
    const zombies = zombieChildren(pid);
    await operatorCall(c, 'POST', '/v1/gc');
    const layerFiles = dataDirFiles(path.join(dataDir, 'layers')).paths.length;
    const live = (await operatorCall<{ sandboxes: Array<{ sandboxId: string; state: string }> }>(c, 'GET', '/v1/sandboxes?limit=1000')).sandboxes;
    // ended records go with the reaper's next prune (1 % of its rounds)
    log('waiting for the records of ended sandboxes to be pruned');
    const ended = () => storeCounts(dataDir).endedSandboxes;
    for (const deadline = Date.now() + 60_000; ended() > 0 && Date.now() < deadline; ) await sleep(500);
    const endedRows = ended();
    log('stopping the server');
    // a graceful stop: the warm pools' VMs go with the server, the sandboxes would not
    server.child.kill('SIGTERM');
    const stopped = await Promise.race([new Promise<boolean>((r) => server!.child.once('exit', () => r(true))), sleep(30_000).then(() => false)]);
    if (!stopped) failures.push(`the server did not stop within 30 s of SIGTERM`);
    await sleep(500);
    const qemuLeft = qemuOf(dataDir);
    const claimsLeft = uidClaimsOf(dataDir);
    const files = dataDirFiles(dataDir);
    const rows = storeCounts(dataDir);

    // --- the report
    const zero = (name: string, n: number, detail = ''): Check => ({ name, end: `${n}${detail}`, target: '0', pass: n === 0 });
    const growth = (end.stats.rssMiB - base.stats.rssMiB) / base.stats.rssMiB;
    const checks: Check[] = [
      zero('cycles failed', failures.length, ` of ${last}`),
      ...(findings ? [zero('API fuzzer findings', findings.length)] : []),
      zero('sandboxes not ended (API)', live.length),
      zero('QEMU processes beyond the pools\' slots', qemuRunning - slots, ` (${qemuRunning} - ${slots} slots)`),
      zero('uid claims beyond the pools\' slots', claimsRunning - slots, ` (${claimsRunning} - ${slots} slots)`),
      zero('zombie children of the server', zombies),
      { name: 'server unix sockets', baseline: String(base.stats.unixSockets), end: String(end.stats.unixSockets), target: '<= baseline', pass: end.stats.unixSockets <= base.stats.unixSockets },
      { name: 'server open fds', baseline: String(base.stats.fds), end: String(end.stats.fds), target: '<= baseline', pass: end.stats.fds <= base.stats.fds },
      { name: 'server RSS (MiB)', baseline: fmt(base.stats.rssMiB), end: `${fmt(end.stats.rssMiB)} (${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(1)} %)`, target: `< +${RSS_GROWTH_LIMIT * 100} %`, pass: growth < RSS_GROWTH_LIMIT },
      zero('layer files after a gc', layerFiles),
      zero('ended sandbox rows past retention', endedRows),
      { name: 'server errors logged', end: String(errorLines), target: '0', pass: errorLines === 0 },
      zero('after the stop: QEMU processes', qemuLeft.length),
      zero('after the stop: uid claims', claimsLeft.length),
      zero('after the stop: data-dir bytes (beyond DB, key)', files.bytes, files.paths.length ? ` in ${files.paths.length} files` : ''),
      ...DB_TABLES.map((t) => zero(`after the stop: DB rows in ${t}`, rows[t])),
    ];
    const steps = [...soak.timings, ['whole cycle (not the warm-up)', cycleMs] as const].map(([name, ms]) => [name, String(ms.length), fmt(median(ms)), fmt(quantile(ms, 0.95))]);
    const cycleS = median(cycleMs) / 1000;
    process.stdout.write(
      `\nsoak: ${cycleMs.length} of ${o.cycles} cycles completed after ${o.warmup} of warm-up, median cycle ${fmt(cycleS)} s` +
        ` (500 cycles: ~${fmt((500 * cycleS) / 3600)} h)\n\n` +
        textTable(['step', 'n', 'median ms', 'p95 ms'], steps, (col) => col === 0) +
        `\n\nserver RSS (MiB): ${rss.map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}\n\n` +
        textTable(
          ['check', 'baseline', 'end', 'target', 'result'],
          checks.map((ch) => [ch.name, ch.baseline ?? '', ch.end, ch.target, ch.pass === undefined ? '' : ch.pass ? 'pass' : 'FAIL']),
          (col) => col === 0 || col === 4,
        ) +
        '\n',
    );
    const details = [
      ...failures,
      ...fdChanges(base.stats, end.stats),
      ...(findings ?? []).slice(0, 20).map((f) => `fuzz finding: ${JSON.stringify(f)}`),
      ...live.map((s) => `not ended: ${s.sandboxId} (${s.state})`),
      ...files.paths.slice(0, 20).map((p) => `left in the data dir: ${p}`),
      ...qemuLeft.map((p) => `QEMU left: pid ${p}`),
      ...claimsLeft.map((f) => `uid claim left: ${f}`),
      ...lastErrors.map((l) => `server error: ${l}`),
    ];
    if (details.length) process.stdout.write('\n' + details.join('\n') + '\n');
    const failed = checks.filter((ch) => ch.pass === false);
    process.stdout.write(failed.length ? `\nsoak FAILED: ${failed.map((ch) => ch.name).join(', ')}\n` : '\nsoak passed: every target met\n');
    return failed.length ? 1 : 0;
  } catch (err) {
    process.stderr.write(`soak failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    if (server) process.stderr.write(`server output (last lines):\n${server.output().split('\n').slice(-20).join('\n')}\n`);
    return 1;
  } finally {
    teardown();
  }
}

/** Blocks until a process has exited (gone or a zombie), at most 5 s: used where no event loop runs (signals, exit). */
function waitGoneSync(pid: number): void {
  const wait = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 100; i++) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return;
    } catch {
      return;
    }
    Atomics.wait(wait, 0, 0, 50);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
