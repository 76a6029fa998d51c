/**
 * The benchmark's N-way fork rows: one request forking a source into 1, 4 and 10 children (1 and 4
 * with --quick): how long the source was paused (once, whatever the count), the wall time until
 * every child answered a command, and the host memory (PSS of its QEMU) per child once it answered.
 */
import fs from 'node:fs';
import { Sandbox } from 'nullspace';
import { qemuPid } from '../harness.js';
import { median, type Row } from './stats.js';

const MiB = 1048576;

interface Ctx {
  conn: { apiUrl: string; apiKey: string };
  quick: boolean;
  log: (m: string) => void;
  /** Resolves once the server's warm pools are full (nothing else measured takes CPU). */
  poolReady: () => Promise<unknown>;
}

function pssMiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const m = /Pss:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m?.[1] ? Number(m[1]) / 1024 : NaN;
}

/** The rows; every sandbox it starts is killed before it returns. */
export async function forkRows(ctx: Ctx): Promise<Row[]> {
  const { conn, log } = ctx;
  const counts = ctx.quick ? [1, 4] : [1, 4, 10];
  const samples = ctx.quick ? 1 : 3;
  const src = await Sandbox.create({ ...conn });
  const rows: Row[] = [];
  try {
    // a source with a live process holding memory, as a fork of real work would be
    await src.commands.run("python3 -c 'import os,time; b=bytearray(os.urandom(32<<20)); open(\"/tmp/ready\",\"w\").close(); time.sleep(86400)'", { background: true, timeoutMs: 0 });
    await src.commands.run('while [ ! -e /tmp/ready ]; do sleep 0.2; done', { timeoutMs: 300_000 });
    for (const count of counts) {
      const pause: number[] = [];
      const wall: number[] = [];
      const perChild: number[] = [];
      for (let i = 0; i < samples; i++) {
        log(`fork x${count} ${i + 1}/${samples}`);
        await ctx.poolReady();
        const t0 = performance.now();
        const res = await fetch(`${conn.apiUrl}/v1/sandboxes/${src.sandboxId}/fork`, {
          method: 'POST',
          headers: { authorization: `Bearer ${conn.apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ count }),
        });
        const body = (await res.json()) as { sandboxes?: Array<{ sandboxId: string }>; pauseMs?: number | null; error?: { message: string } };
        if (!res.ok || !body.sandboxes) throw new Error(`fork x${count}: ${body.error?.message ?? res.status}`);
        const ids = body.sandboxes.map((s) => s.sandboxId);
        try {
          await Promise.all(ids.map(async (id) => (await Sandbox.connect(id, conn)).commands.run('true')));
          wall.push(performance.now() - t0);
          pause.push(body.pauseMs ?? NaN);
          perChild.push(median(ids.map((id) => pssMiB(qemuPid(id)))));
        } finally {
          await Promise.all(ids.map((id) => Sandbox.kill(id, conn)));
        }
      }
      rows.push(
        { name: `fork x${count}: source pause (one capture)`, unit: 'ms', samples: pause },
        { name: `fork x${count}: request to all children answering`, unit: 'ms', samples: wall, ...(count > 1 && rows[1] ? { ref: { value: median(rows[1].samples), label: 'fork x1' } } : {}) },
        { name: `fork x${count}: host memory per child (QEMU PSS)`, unit: 'MiB', samples: perChild },
      );
    }
  } finally {
    await src.kill().catch(() => {});
  }
  return rows;
}
