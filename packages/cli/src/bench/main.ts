#!/usr/bin/env node
/**
 * nullspace benchmark: `npm run bench` (or `-- --quick` for a short run that proves it works).
 * Starts its own server on a temporary data dir, measures, prints a table of medians, p95 and
 * ratios, and cleans up. Times are measured, never asserted.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, startServer } from '@nullspace/server';
import { findTemplate } from '@nullspace/runtime';
import { execFileSync } from 'node:child_process';
import { Sandbox, Snapshot } from 'nullspace';
import { formatTable, median, type Row } from './stats.js';

const quick = process.argv.includes('--quick');
const N = quick ? 3 : 10;

function pss(pid: number): number {
  const m = /Pss:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m?.[1] ? Number(m[1]) / 1024 : NaN;
}

/** Bytes in use on the file system holding `dir` (after a sync, so that writeback is counted). */
function usedBytes(dir: string): number {
  execFileSync('sync');
  const st = fs.statfsSync(dir);
  return (st.blocks - st.bfree) * st.bsize;
}

function qemuPid(id: string): number | undefined {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`nullspace-${id}\0`)) return Number(p);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

async function time<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}

async function main(): Promise<void> {
  const home = process.env.NULLSPACE_HOME ?? '/var/lib/nullspace';
  const dataDir = path.join(home, 'tmp', `bench-${randomBytes(3).toString('hex')}`);
  const key = `bench-${randomBytes(12).toString('hex')}`;
  const config = loadConfig({ ...process.env, NULLSPACE_API_KEY: key, NULLSPACE_LOG_LEVEL: 'warn' }, { dataDir, port: 0 });
  const server = await startServer(config);
  const c = { apiUrl: server.url, apiKey: key };
  const created: Sandbox[] = [];
  try {
    const template = findTemplate(config.cacheDir, 'base');
    if (!template) throw new Error('template base is not built: run nullspace template build base');
    process.stderr.write(`benchmark (${quick ? 'quick' : 'full'}, n=${N}) on ${server.host.profile.accel}, cpu ${server.host.profile.cpuModel}, ${template.memoryMiB} MiB guests\n`);

    const createMs: number[] = [];
    for (let i = 0; i < N; i++) {
      const [ms, sbx] = await time(() => Sandbox.create({ ...c, template: 'base' }));
      createMs.push(ms);
      if (i < N - 1) await sbx.kill();
      else created.push(sbx);
    }
    const sbx = created[0]!;
    // the first command of a fresh sandbox pays for QEMU's empty translation cache under TCG
    const [firstCmd] = await time(() => sbx.commands.run('true'));
    const rtt: number[] = [];
    for (let i = 0; i < N * 2; i++) rtt.push((await time(() => sbx.commands.run('true')))[0]);
    const python: number[] = [];
    for (let i = 0; i < N; i++) python.push((await time(() => sbx.commands.run("python3 -c 'print(6*7)'")))[0]);
    const mib = randomBytes(1024 * 1024);
    const fileRtt: number[] = [];
    for (let i = 0; i < N; i++) {
      fileRtt.push(
        (
          await time(async () => {
            await sbx.files.write('/workspace/bench.bin', mib);
            const back = await sbx.files.read('/workspace/bench.bin', { format: 'bytes' });
            if (back.length !== mib.length) throw new Error('short read');
          })
        )[0],
      );
    }
    // idle memory: a fresh sandbox left alone for a while
    const idle = await Sandbox.create({ ...c, template: 'base' });
    created.push(idle);
    await new Promise((r) => setTimeout(r, quick ? 2000 : 5000));
    const idlePss = [pss(qemuPid(idle.sandboxId)!)];

    // snapshots: pause window and wall time, restore time, bytes stored
    const snapSrc = await Sandbox.create({ ...c, template: 'base' });
    created.push(snapSrc);
    // make the guest dirty some memory and disk first (64 MiB in a live process, 16 MiB of files)
    await snapSrc.commands.run(
      "python3 -c 'import os,time; b=bytearray(os.urandom(64<<20)); open(\"/tmp/ready\",\"w\").close(); time.sleep(3600)'",
      { background: true, timeoutMs: 0 },
    );
    await snapSrc.commands.run('while [ ! -e /tmp/ready ]; do sleep 0.2; done; head -c 16M /dev/urandom > /workspace/blob', { timeoutMs: 120_000 });
    const pauses: number[] = [];
    const snapWall: number[] = [];
    const storedDelta: number[] = [];
    const snaps: Snapshot[] = [];
    for (let i = 0; i < N; i++) {
      const before = usedBytes(dataDir);
      const [ms, snap] = await time(() => snapSrc.createSnapshot());
      storedDelta.push((usedBytes(dataDir) - before) / 1048576);
      snapWall.push(ms);
      pauses.push(snap.pauseMs ?? NaN);
      snaps.push(snap);
    }
    const restoreMs: number[] = [];
    for (let i = 0; i < N; i++) {
      const [ms, child] = await time(() => Sandbox.create({ ...c, snapshotId: snaps[0]!.id }));
      restoreMs.push(ms);
      await child.kill();
    }
    const layerMiB = snaps.map((x) => x.sizeBytes / 1048576);
    for (const x of snaps) await x.delete();

    // fork: source pause window, fork() -> child answering, memory added per idle child
    const forkPause: number[] = [];
    const forkMs: number[] = [];
    const children: Sandbox[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const res = await fetch(`${c.apiUrl}/v1/sandboxes/${snapSrc.sandboxId}/fork`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{}',
      });
      if (res.status !== 201) throw new Error(`fork: HTTP ${res.status}: ${await res.text()}`);
      const { sandboxId } = (await res.json()) as { sandboxId: string };
      const child = await Sandbox.connect(sandboxId, c);
      await child.commands.run('true');
      forkMs.push(performance.now() - t0);
      forkPause.push(Number(res.headers.get('x-nullspace-pause-ms')));
      children.push(child);
      created.push(child);
    }
    await new Promise((r) => setTimeout(r, quick ? 2000 : 5000));
    const childPss = children.map((ch) => pss(qemuPid(ch.sandboxId)!));
    for (const ch of children) await ch.kill();

    // hibernate / resume of a sandbox holding 64 MiB of live process memory
    const hibMs: number[] = [];
    const resumeMs: number[] = [];
    const freedMiB: number[] = [];
    for (let i = 0; i < N; i++) {
      const before = pss(qemuPid(snapSrc.sandboxId)!);
      const [hms] = await time(() => snapSrc.hibernate());
      hibMs.push(hms);
      freedMiB.push(before - (qemuPid(snapSrc.sandboxId) === undefined ? 0 : before));
      const [rms] = await time(() => Sandbox.connect(snapSrc.sandboxId, c));
      resumeMs.push(rms);
    }

    const rows: Row[] = [
      { name: 'create from template -> agent answering', unit: 'ms', samples: createMs, ref: { value: template.bootMs, label: 'cold boot of the template' }, target: '<= 500 ms' },
      { name: 'first command in a fresh sandbox', unit: 'ms', samples: [firstCmd] },
      { name: 'command round trip (true)', unit: 'ms', samples: rtt },
      { name: "python3 -c 'print(6*7)'", unit: 'ms', samples: python },
      { name: '1 MiB file write + read', unit: 'ms', samples: fileRtt },
      { name: 'idle sandbox memory (QEMU PSS)', unit: 'MiB', samples: idlePss, ref: { value: template.memoryMiB, label: 'nominal guest RAM' }, target: '<= 100 MiB' },
      { name: 'snapshot: source pause window', unit: 'ms', samples: pauses, target: '<= 50 ms, flat in RAM size' },
      { name: 'snapshot: wall time (API call)', unit: 'ms', samples: snapWall },
      { name: 'create from snapshot -> agent answering', unit: 'ms', samples: restoreMs, ref: { value: median(createMs), label: 'create from template' }, target: '<= 500 ms' },
      { name: 'snapshot: new disk space used (reflinked)', unit: 'MiB', samples: storedDelta, ref: { value: 80, label: 'guest dirtied 64 MiB RAM + 16 MiB disk' } },
      { name: 'snapshot: layer blocks (shared counted)', unit: 'MiB', samples: layerMiB, ref: { value: template.memoryMiB, label: 'nominal guest RAM' } },
      { name: 'fork: source pause window', unit: 'ms', samples: forkPause, target: 'tens of ms, flat in RAM size' },
      { name: 'fork() -> child answering a command', unit: 'ms', samples: forkMs, target: '<= 500 ms' },
      { name: 'idle fork child memory (QEMU PSS)', unit: 'MiB', samples: childPss, ref: { value: idlePss[0]!, label: 'idle sandbox from the template' } },
      { name: 'hibernate (64 MiB live in the guest)', unit: 'ms', samples: hibMs },
      { name: 'resume (connect) -> agent answering', unit: 'ms', samples: resumeMs, ref: { value: median(createMs), label: 'create from template' } },
      { name: 'host RAM freed per hibernated sandbox', unit: 'MiB', samples: freedMiB, ref: { value: template.memoryMiB, label: 'nominal guest RAM' } },
    ];
    process.stdout.write('\n' + formatTable(rows) + '\n');
    process.stdout.write(`\ncreate median ${median(createMs).toFixed(0)} ms vs cold boot ${template.bootMs} ms: ${(template.bootMs / median(createMs)).toFixed(1)}x faster\n`);
  } finally {
    await Promise.all(created.map((s) => s.kill().catch(() => {})));
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
