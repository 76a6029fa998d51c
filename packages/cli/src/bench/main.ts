#!/usr/bin/env node
/**
 * nullspace benchmark: `npm run bench` (full) or `npm run bench -- --quick` (a short run that proves
 * it works; the test suite runs it); `--only=e2b` runs only the E2B SDK rows (n=10, or 2 with --quick); `--only=fleet` only the fleet rows (a local cluster of 3 hosts; full runs include them). Starts its own server on a temporary data dir, measures
 * nullspace's operations side by side with what a user would otherwise do on the same QEMU and image
 * (cold boot, QEMU's full-stream save/restore, libvirt) and with the floor of any restore, prints
 * tables of medians, p95 and ratios, and cleans up. Times are measured, never asserted.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { findTemplate } from '@nullspace/runtime';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { Sandbox, type SandboxOpts, type Snapshot } from 'nullspace';
import { onInterrupt, operatorCall, poolsReady, qemuPid, removeDataDir, scratchDataDir } from '../harness.js';
import { templateBuild } from '../template.js';
import { coldBoot, floor, fullMigration, type BaselineCtx } from './baselines.js';
import { libvirtBaselines, libvirtUnavailable } from './libvirt.js';
import { egressRows } from './egress.js';
import { previewRows } from './preview.js';
import { formatTable, median, time, type Row } from './stats.js';
import { forkRows } from './forks.js';
import { e2bRows } from './e2b.js';
import { fleetRows } from './fleet.js';
import { templateRows } from './templates.js';
import { terminalRows } from './terminal.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const N = quick ? 3 : 10;
const ONLY = args.find((a) => a.startsWith('--only='))?.split('=')[1];
if (ONLY !== undefined && ONLY !== 'e2b' && ONLY !== 'fleet') throw new Error(`--only=${ONLY}: only --only=e2b and --only=fleet are known`);
const DENSITY = quick ? 0 : Number(args.find((a) => a.startsWith('--density='))?.split('=')[1] ?? 100);

const MiB = 1048576;
const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

function pss(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const m = /Pss:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m?.[1] ? Number(m[1]) / 1024 : NaN;
}

/** Bytes in use on the file system holding `dir` (after a sync, so that writeback is counted). */
function usedBytes(dir: string): number {
  execFileSync('sync');
  const st = fs.statfsSync(dir);
  return (st.blocks - st.bfree) * st.bsize;
}

function availableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function repeat(n: number, fn: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

/** A guest that holds 64 MiB of random data in a live process and wrote 16 MiB of files. */
async function dirty(s: Sandbox): Promise<void> {
  await s.commands.run(
    "python3 -c 'import os,time; b=bytearray(os.urandom(64<<20)); open(\"/tmp/ready\",\"w\").close(); time.sleep(86400)'",
    { background: true, timeoutMs: 0 },
  );
  await s.commands.run('while [ ! -e /tmp/ready ]; do sleep 0.2; done; head -c 16M /dev/urandom > /workspace/blob', { timeoutMs: 300_000 });
}

async function printFleet(): Promise<void> {
  const fleet = await fleetRows({ quick, n: N, log });
  if (fleet.rows.length) process.stdout.write('\n' + formatTable(fleet.rows) + '\n');
  for (const note of fleet.notes) process.stdout.write(`(${note})\n`);
}

async function main(): Promise<void> {
  if (ONLY === 'fleet') return printFleet();
  const dataDir = scratchDataDir('bench');
  // (a data dir of its own, not one under dataDir: unix socket paths under a data dir are bounded)
  const noPoolDir = scratchDataDir('bnp');
  const key = `bench-${randomBytes(12).toString('hex')}`;
  const config = loadConfig({ ...process.env, NULLSPACE_API_KEY: key, NULLSPACE_LOG_LEVEL: 'warn' }, { dataDir, port: 0 });
  const created: Sandbox[] = [];
  const snapshots: Snapshot[] = [];
  let server: RunningServer | undefined;
  // everything the run started lives in its temporary data dirs: killing their QEMU processes,
  // freeing their uid claims and removing the dirs leaves nothing behind
  const removeAll = () => {
    for (const dir of [dataDir, noPoolDir]) removeDataDir(dir);
  };
  const cleanup = async () => {
    await Promise.all(created.map((s) => s.kill().catch(() => {})));
    for (const s of snapshots) await s.delete().catch(() => {});
    await server?.close().catch(() => {});
    removeAll();
  };
  // interrupted: no graceful shutdown (the run's requests are still in flight), straight to the end
  onInterrupt('removing everything the run started', log, removeAll);
  try {
    server = await startServer(config);
    const c = { apiUrl: server.url, apiKey: key };
    const template = findTemplate(config.cacheDir, 'base');
    if (!template) throw new Error('template base is not built: run nullspace template build base');
    const profile = server.host.profile;
    log(`${quick ? 'quick' : 'full'} run, n=${N}, ${profile.accel} (cpu ${profile.cpuModel}), ${template.memoryMiB} MiB guests, QEMU ${profile.qemuVersion}`);
    const create = async (opts: SandboxOpts = {}) => {
      const s = await Sandbox.create({ ...c, ...opts });
      created.push(s);
      return s;
    };
    const kill = async (s: Sandbox) => {
      await s.kill();
      created.splice(created.indexOf(s), 1);
    };

    // the warm pools fill after the start and after each snapshot: measure nothing while they do (it
    // takes CPU), as for calls that do not come in bursts faster than they refill (~1 s per slot here)
    const poolReady = () => poolsReady(c);
    await poolReady();
    if (ONLY === 'e2b') {
      const e2b = await e2bRows({ conn: c, n: N, log, poolReady });
      process.stdout.write('\n' + formatTable(e2b.rows) + '\n');
      for (const note of e2b.notes) process.stdout.write(`(${note})\n`);
      return;
    }

    // --- the floor and the alternatives on the same QEMU and image
    const ctx: BaselineCtx = { profile, template, dir: path.join(dataDir, 'baselines') };
    log('floor: QEMU spawn (-incoming defer) to QMP ready + device state');
    const floors = [];
    for (let i = 0; i < N; i++) floors.push(await floor(ctx));
    const floorMs = median(floors.map((f) => f.totalMs));
    log('cold boot of the same image');
    const boots = await repeat(quick ? 1 : 3, () => coldBoot(ctx));
    log("QEMU's standard save/restore (full migration stream)");
    const migs = [];
    for (let i = 0; i < (quick ? 1 : 3); i++) migs.push(await fullMigration(ctx));

    // --- nullspace: create, commands, files, memory
    // with the warm pool (the default): measured when it is ready, as it is for creates that do not
    // come in bursts faster than it refills (~1 s per slot here)
    log(`create from template (warm pool of ${config.warmPoolSize}, ready before each)`);
    const createMs = await repeat(N, async () => {
      await poolReady();
      const [ms, s] = await time(() => create({ template: 'base' }));
      await kill(s);
      return ms;
    });
    // and every step on the request's path: a second server without pools (template and snapshots)
    const withoutPools = async <T>(what: string, fn: (c2: { apiUrl: string; apiKey: string }) => Promise<T>): Promise<T> => {
      log(`${what} without warm pools (a second server, NULLSPACE_WARM_POOL=0 NULLSPACE_SNAPSHOT_POOL=0)`);
      let noPool: RunningServer | undefined;
      try {
        const env = { ...process.env, NULLSPACE_API_KEY: key, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' };
        noPool = await startServer(loadConfig(env, { dataDir: noPoolDir, port: 0 }));
        return await fn({ apiUrl: noPool.url, apiKey: key });
      } finally {
        await noPool?.close();
        removeDataDir(noPoolDir);
      }
    };
    const noPoolCreateMs = await withoutPools('create from template', (c2) =>
      repeat(N, async () => {
        const [ms, s] = await time(() => Sandbox.create({ ...c2, template: 'base' }));
        await s.kill();
        return ms;
      }),
    );
    await poolReady();
    const sbx = await create({ template: 'base' });
    const [firstCmd] = await time(() => sbx.commands.run('true'));
    const rtt = await repeat(N * 2, async () => (await time(() => sbx.commands.run('true')))[0]);
    const python = await repeat(N, async () => (await time(() => sbx.commands.run("python3 -c 'print(6*7)'")))[0]);
    const mib = randomBytes(MiB);
    const fileRtt = await repeat(N, async () => {
      const [ms] = await time(async () => {
        await sbx.files.write('/workspace/bench.bin', mib);
        if ((await sbx.files.read('/workspace/bench.bin', { format: 'bytes' })).length !== MiB) throw new Error('short read');
      });
      return ms;
    });
    // memory: a fresh sandbox left idle, and the one above after its work
    const fresh = await create({ template: 'base' });
    await new Promise((r) => setTimeout(r, quick ? 2000 : 5000));
    const idlePss = pss(qemuPid(fresh.sandboxId));
    const workedPss = pss(qemuPid(sbx.sandboxId));
    await kill(fresh);

    // --- snapshots of a guest that changed 64 MiB of RAM and 16 MiB of disk
    log('snapshots');
    const src = await create({ template: 'base' });
    await dirty(src);
    const pauses: number[] = [];
    const snapWall: number[] = [];
    const storedDelta: number[] = [];
    // what earlier steps released is collected first: the disk usage deltas then count this step only
    const collect = () => operatorCall(c, 'POST', '/v1/gc');
    for (let i = 0; i < N; i++) {
      await poolReady();
      await collect();
      const before = usedBytes(dataDir);
      const [ms, snap] = await time(() => src.createSnapshot());
      storedDelta.push((usedBytes(dataDir) - before) / MiB);
      snapWall.push(ms);
      pauses.push(snap.pauseMs ?? NaN);
      snapshots.push(snap);
    }
    // from the latest snapshot, kept warm (NULLSPACE_SNAPSHOT_POOL), ready before each
    const restoreMs = await repeat(N, async () => {
      await poolReady();
      const [ms, child] = await time(() => create({ snapshotId: snapshots[snapshots.length - 1]!.id }));
      await kill(child);
      return ms;
    });
    // every step on the request's path: the same guest, snapshotted on a server without pools
    const noPoolRestoreMs = await withoutPools('create from snapshot', async (c2) => {
      const s = await Sandbox.create({ ...c2, template: 'base' });
      try {
        await dirty(s);
        const snap = await s.createSnapshot();
        return await repeat(N, async () => {
          const [ms, child] = await time(() => Sandbox.create({ ...c2, snapshotId: snap.id }));
          await child.kill();
          return ms;
        });
      } finally {
        await s.kill();
      }
    });
    const layerMiB = snapshots.map((x) => x.sizeBytes / MiB);
    for (const x of snapshots.splice(0)) await x.delete();

    // --- fork
    log('fork');
    const forkPause: number[] = [];
    const forkMs: number[] = [];
    const forkAnswerMs: number[] = [];
    const children: Sandbox[] = [];
    for (let i = 0; i < N; i++) {
      await poolReady();
      const t0 = performance.now();
      const res = await fetch(`${c.apiUrl}/v1/sandboxes/${src.sandboxId}/fork`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{}',
      });
      if (res.status !== 201) throw new Error(`fork: HTTP ${res.status}: ${await res.text()}`);
      forkMs.push(performance.now() - t0);
      const { sandboxId } = (await res.json()) as { sandboxId: string };
      const child = await Sandbox.connect(sandboxId, c);
      created.push(child);
      await child.commands.run('true');
      forkAnswerMs.push(performance.now() - t0);
      forkPause.push(Number(res.headers.get('x-nullspace-pause-ms')));
      // at most 3 children live (their idle memory is measured below): a growing crowd of running
      // children would measure the host's contention, not the fork
      if (children.length === 3) await kill(children.shift()!);
      children.push(child);
    }
    await new Promise((r) => setTimeout(r, quick ? 2000 : 5000));
    const childPss = children.map((ch) => pss(qemuPid(ch.sandboxId)));
    for (const ch of children) await kill(ch);

    // --- hibernate / resume
    log('hibernate and resume');
    const hibMs: number[] = [];
    const resumeMs: number[] = [];
    const freedMiB: number[] = [];
    const hibWritten: number[] = [];
    for (let i = 0; i < N; i++) {
      const before = pss(qemuPid(src.sandboxId));
      await collect();
      const used = usedBytes(dataDir);
      hibMs.push((await time(() => src.hibernate()))[0]);
      hibWritten.push((usedBytes(dataDir) - used) / MiB);
      freedMiB.push(qemuPid(src.sandboxId) === undefined ? before : 0);
      resumeMs.push((await time(() => Sandbox.connect(src.sandboxId, c)))[0]);
    }

    // --- libvirt on the same image (full runs; installed by scripts/bench.sh)
    let lv: Awaited<ReturnType<typeof libvirtBaselines>> | undefined;
    const lvWhy = quick ? 'skipped in --quick runs' : libvirtUnavailable();
    let lvFailed: string | undefined;
    if (!lvWhy) {
      log('libvirt: boot, virsh save/restore, snapshot-create-as --memspec');
      lv = await libvirtBaselines(template, dataDir).catch((err: unknown) => {
        lvFailed = `libvirt failed: ${(err as Error).message.split('\n')[0]}`;
        log(lvFailed);
        return undefined;
      });
    } else log(`libvirt: ${lvWhy}`);

    const vsFloor = { value: floorMs, label: 'floor' };
    const rows: Row[] = [
      { name: 'floor: QEMU spawn + device state load', unit: 'ms', samples: floors.map((f) => f.totalMs), ref: vsFloor },
      { name: '  of which QEMU spawn to QMP ready', unit: 'ms', samples: floors.map((f) => f.spawnMs) },
      { name: 'create from template -> agent answering', unit: 'ms', samples: createMs, ref: vsFloor, target: '<= 2x floor' },
      { name: '  same without the warm pool', unit: 'ms', samples: noPoolCreateMs, ref: vsFloor },
      { name: 'create from snapshot -> agent answering', unit: 'ms', samples: restoreMs, ref: vsFloor, target: '<= 2x floor' },
      { name: '  same without the snapshot pool', unit: 'ms', samples: noPoolRestoreMs, ref: vsFloor },
      { name: 'fork() -> child created', unit: 'ms', samples: forkMs, ref: vsFloor, target: '<= 2x floor' },
      { name: 'fork() -> child answering a command', unit: 'ms', samples: forkAnswerMs, ref: vsFloor },
      { name: 'resume (connect) -> agent answering', unit: 'ms', samples: resumeMs, ref: vsFloor },
      { name: 'alt: cold boot -> agent answering', unit: 'ms', samples: boots, ref: vsFloor },
      { name: 'alt: QEMU full-stream restore -> agent', unit: 'ms', samples: migs.map((m) => m.restoreMs), ref: vsFloor },
      ...(lv
        ? [
            { name: 'alt: libvirt boot -> agent answering', unit: 'ms' as const, samples: [lv.bootMs], ref: vsFloor },
            { name: 'alt: libvirt virsh restore -> agent', unit: 'ms' as const, samples: [lv.restoreMs], ref: vsFloor },
          ]
        : []),
      { name: 'snapshot: source pause window', unit: 'ms', samples: pauses, target: '<= 50 ms' },
      { name: 'snapshot: wall time (API call)', unit: 'ms', samples: snapWall },
      { name: 'fork: source pause window', unit: 'ms', samples: forkPause, target: '<= 50 ms' },
      { name: 'hibernate (64 MiB live in the guest)', unit: 'ms', samples: hibMs },
      { name: 'alt: QEMU full-stream save (VM stopped)', unit: 'ms', samples: migs.map((m) => m.saveMs), ref: { value: median(pauses), label: 'snapshot pause' } },
      ...(lv
        ? [
            { name: 'alt: libvirt virsh save', unit: 'ms' as const, samples: [lv.saveMs], ref: { value: median(hibMs), label: 'hibernate' } },
            { name: 'alt: libvirt snapshot --memspec (paused)', unit: 'ms' as const, samples: [lv.snapshotMs], ref: { value: median(pauses), label: 'snapshot pause' } },
          ]
        : []),
      { name: 'command round trip (true)', unit: 'ms', samples: rtt },
      { name: 'first command in a fresh sandbox', unit: 'ms', samples: [firstCmd] },
      { name: "python3 -c 'print(6*7)'", unit: 'ms', samples: python },
      { name: '1 MiB file write + read', unit: 'ms', samples: fileRtt },
      { name: 'idle sandbox memory (QEMU PSS)', unit: 'MiB', samples: [idlePss], ref: { value: template.memoryMiB, label: 'nominal RAM' }, target: '<= 100 MiB' },
      { name: 'same after python + file work', unit: 'MiB', samples: [workedPss], ref: { value: template.memoryMiB, label: 'nominal RAM' } },
      { name: 'idle fork child memory (QEMU PSS)', unit: 'MiB', samples: childPss, ref: { value: idlePss, label: 'idle sandbox' } },
      { name: 'host RAM freed per hibernated sandbox', unit: 'MiB', samples: freedMiB },
      { name: 'disk used per snapshot (+ source divergence)', unit: 'MiB', samples: storedDelta, ref: { value: 80, label: 'guest changed 80 MiB' } },
      { name: 'disk written per hibernation', unit: 'MiB', samples: hibWritten, ref: { value: 80, label: 'guest changed 80 MiB' } },
      { name: 'snapshot layer blocks (shared counted)', unit: 'MiB', samples: layerMiB, ref: { value: template.memoryMiB, label: 'nominal RAM' } },
      { name: 'alt: full migration stream size', unit: 'MiB', samples: migs.map((m) => m.bytes / MiB), ref: { value: median(storedDelta), label: 'per snapshot' } },
      ...(lv ? [{ name: 'alt: libvirt memspec file size', unit: 'MiB' as const, samples: [lv.snapshotBytes / MiB], ref: { value: median(storedDelta), label: 'per snapshot' } }] : []),
    ];
    process.stdout.write('\n' + formatTable(rows) + '\n');
    if (lvWhy ?? lvFailed) process.stdout.write(`(libvirt rows: ${lvWhy ?? lvFailed})\n`);

    // --- templates: builds, an image import, a create to a service answering
    const tpl = await templateRows({ conn: c, config, dir: path.join(dataDir, 'bench-templates'), n: N, quick, log, poolReady });
    process.stdout.write('\n' + formatTable(tpl.rows) + '\n');
    for (const note of tpl.notes) process.stdout.write(`(${note})\n`);

    // --- preview URLs (the proxy and the agent's tunnel)
    await poolReady();
    process.stdout.write('\n' + formatTable(await previewRows({ conn: c, quick, create, kill, log })) + '\n');

    // --- egress rules (the per-sandbox egress proxy against user-mode networking alone)
    await poolReady();
    process.stdout.write('\n' + formatTable(await egressRows({ quick, create, kill, log })) + '\n');

    // --- N-way fork: one capture, N children
    process.stdout.write('\n' + formatTable(await forkRows({ conn: c, quick, log, poolReady })) + '\n');

    // --- terminals: a keystroke's echo against a command
    process.stdout.write('\n' + formatTable(await terminalRows(c, N, poolReady)) + '\n');

    // --- E2B's SDK on the E2B-compatible surface against nullspace's SDK
    const e2b = await e2bRows({ conn: c, n: quick ? 2 : N, log, poolReady });
    if (e2b.rows.length) process.stdout.write('\n' + formatTable(e2b.rows) + '\n');
    for (const note of e2b.notes) process.stdout.write(`(${note})\n`);

    // --- pause window against RAM size, and density (full runs)
    if (!quick) {
      const sizeRows: Row[] = [];
      for (const mem of [256, 512, 2048]) {
        const name = mem === template.memoryMiB ? 'base' : `bench-${mem}m`;
        if (name !== 'base') await templateBuild(config, { recipe: 'base', name, memoryMiB: mem }, log);
        const s = await create({ template: name });
        await dirty(s);
        const p: number[] = [];
        for (let i = 0; i < N; i++) {
          await poolReady();
          const snap = await s.createSnapshot();
          p.push(snap.pauseMs ?? NaN);
          await snap.delete();
        }
        await kill(s);
        sizeRows.push({ name: `snapshot pause window, ${mem} MiB guest`, unit: 'ms', samples: p, ref: { value: median(pauses), label: '512 MiB' }, target: '<= 50 ms, flat' });
      }
      process.stdout.write('\n' + formatTable(sizeRows) + '\n');
    }
    // --- a fleet: the control plane's hop, placement, a restore across hosts (a cluster of its own)
    if (!quick) await printFleet();
    if (DENSITY > 0) await density(c, DENSITY, created, kill);
  } finally {
    await cleanup();
  }
}

/** How many idle sandboxes from one snapshot fit and stay responsive, and their memory. */
async function density(c: { apiUrl: string; apiKey: string }, target: number, created: Sandbox[], kill: (s: Sandbox) => Promise<void>): Promise<void> {
  log(`density: up to ${target} idle sandboxes from one snapshot`);
  const base = await Sandbox.create(c);
  created.push(base);
  const snap = await base.createSnapshot();
  await kill(base);
  const availBefore = availableMiB();
  const fleet: Sandbox[] = [];
  let stopped = '';
  for (let i = 0; i < target; i++) {
    try {
      const s = await Sandbox.create({ ...c, snapshotId: snap.id, timeoutMs: 3_600_000 });
      created.push(s);
      fleet.push(s);
    } catch (err) {
      stopped = `stopped at ${i}: ${(err as Error).message}`;
      break;
    }
  }
  await new Promise((r) => setTimeout(r, 10_000));
  // CPU the idle fleet costs the host
  const pids = fleet.map((s) => qemuPid(s.sandboxId)).filter((p): p is number => p !== undefined);
  const ticks = () => pids.reduce((sum, pid) => {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      return sum + Number(f[11]) + Number(f[12]);
    } catch {
      return sum;
    }
  }, 0);
  const t0 = ticks();
  await new Promise((r) => setTimeout(r, 10_000));
  const idleCpuPct = ((ticks() - t0) / 100 / 10) * 100;
  // each sandbox answers (its first command pays for the empty translation cache), then round trips
  let responsive = 0;
  const firstMs: number[] = [];
  const rtts: number[] = [];
  for (const pass of ['first', 'warm'] as const) {
    for (let i = 0; i < fleet.length; i += 10) {
      await Promise.all(
        fleet.slice(i, i + 10).map(async (s) => {
          const t = performance.now();
          try {
            await s.commands.run('true', { timeoutMs: 30_000 });
            (pass === 'first' ? firstMs : rtts).push(performance.now() - t);
            if (pass === 'first') responsive++;
          } catch {
            /* not responsive */
          }
        }),
      );
    }
  }
  const psss = fleet.map((s) => pss(qemuPid(s.sandboxId)));
  const availAfter = availableMiB();
  const rows: Row[] = [
    { name: `idle sandboxes started (of ${target})`, unit: 'count', samples: [fleet.length] },
    { name: 'responsive (a command within 30 s)', unit: 'count', samples: [responsive] },
    { name: 'first command, 10 at a time', unit: 'ms', samples: firstMs },
    { name: 'command round trip, 10 at a time', unit: 'ms', samples: rtts },
    { name: 'host CPU of the idle fleet', unit: '%', samples: [idleCpuPct], ref: { value: 200, label: 'this host (2 cores)' } },
    { name: 'QEMU PSS per idle sandbox', unit: 'MiB', samples: psss },
    { name: 'host MemAvailable used per sandbox', unit: 'MiB', samples: [(availBefore - availAfter) / Math.max(1, fleet.length)] },
  ];
  process.stdout.write('\n' + formatTable(rows) + '\n');
  if (stopped) process.stdout.write(`(${stopped})\n`);
  await Promise.all(fleet.map((s) => kill(s).catch(() => {})));
  await snap.delete();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
